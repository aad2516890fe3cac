"""Which devices a run simulates: planned for provisioning, or read back from Fleet or a file.

A DeviceSpec is what the city's registry says about a device (kind, endpoint, place, and the
kind's attributes); the physical models take their parameters from it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.geography import SEOUL, District, activity, place
from simulators.noise import Noise

KINDS = ("streetlight", "waste_bin", "wifi_ap")
ENDPOINT_PREFIX = {"streetlight": "sl", "waste_bin": "wb", "wifi_ap": "ap"}
WASTE_KINDS = ("organic", "inorganic", "plastic", "paper", "glass", "metal")
WASTE_KIND_SHARE = (0.25, 0.35, 0.15, 0.12, 0.08, 0.05)
BIN_CAPACITIES = (120, 240, 660)
LAMP_WATTAGES = (60, 90, 120, 150)
AP_BANDS = ("dual", "dual", "5GHz", "2.4GHz", "6GHz")
IMPORT_COLUMNS = ("kind", "endpoint", "serial", "manufacturer", "model", "firmware_version", "lat",
                  "lon", "district", "tags", "nominal_wattage", "pole_number", "lamp_type",
                  "capacity_litres", "waste_kind", "ssid", "band")
SIMULATOR_TAG = "simulated"


@dataclass(frozen=True, slots=True)
class FirmwareProfile:
    """How a model takes firmware (object 5): /5/0/9 delivery (0 pull, 1 push, 2 both), the
    block size it asks for and accepts (RFC 7959), and the flash it has for a package."""

    delivery: int
    block_size: int
    storage_bytes: int


# Per kind (one model each): the LTE streetlight controller takes either way in 1 KiB blocks;
# the NB-IoT bin downloads only, in 512-byte blocks (its radio's frames are small, and a
# sleeping device cannot be pushed to); the Ethernet access point has no CoAP downloader in
# its firmware and takes pushes only.
FIRMWARE = {
    "streetlight": FirmwareProfile(delivery=2, block_size=1024, storage_bytes=4 << 20),
    "waste_bin": FirmwareProfile(delivery=0, block_size=512, storage_bytes=1 << 20),
    "wifi_ap": FirmwareProfile(delivery=1, block_size=1024, storage_bytes=16 << 20),
}


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    kind: str
    endpoint: str
    lat: float
    lon: float
    district: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # A bin's fill as Fleet last stored it: a restarted simulation carries on from there, so
    # its routes' stops are not completed by a "drop" that is only the simulation starting anew.
    fill_percent: float | None = None


def endpoint_name(city_slug: str, kind: str, number: int) -> str:
    return f"{city_slug}-sim-{ENDPOINT_PREFIX[kind]}-{number:05d}"


def plan(city_slug: str, kind: str, numbers: Iterable[int], seed: int,
         districts: tuple[District, ...] = SEOUL) -> list[DeviceSpec]:
    """New devices of one kind, spread over the districts in proportion to street activity."""
    weights = [activity(d.name) for d in districts]
    total = sum(weights)
    specs = []
    for number in numbers:
        endpoint = endpoint_name(city_slug, kind, number)
        noise = Noise(seed, "plan:" + endpoint)
        district = _weighted(districts, weights, total, noise.random())
        lat, lon = place(district, _NoiseAsRandom(noise))
        # Serials are unique within a city, so they follow the endpoint's number.
        serial = f"{ENDPOINT_PREFIX[kind].upper()}{number:08d}"
        if kind == "streetlight":
            attributes = {"nominal_wattage": noise.choice(LAMP_WATTAGES), "lamp_type": "led",
                          "pole_number": f"{district.name[:3].upper()}-{number:05d}"}
            maker = ("Lumen Korea", "LK-120")
        elif kind == "waste_bin":
            attributes = {"capacity_litres": noise.choice(BIN_CAPACITIES),
                          "waste_kind": _weighted(WASTE_KINDS, WASTE_KIND_SHARE, 1.0, noise.random())}
            maker = ("CleanCity", "CC-S240")
        else:
            attributes = {"ssid": "Seoul_Free_WiFi", "band": noise.choice(AP_BANDS)}
            maker = ("AirLink", "AL-6E")
        # The registry knows what was bought; the firmware it learns from the device's /3/0.
        specs.append(DeviceSpec(kind, endpoint, lat, lon, district.name, serial, *maker, None,
                                attributes))
    return specs


def _weighted(options, weights, total: float, draw: float):
    target = draw * total
    for option, weight in zip(options, weights, strict=True):
        target -= weight
        if target < 0:
            return option
    return options[-1]


class _NoiseAsRandom:
    """The two methods geography.place asks of a random.Random."""

    def __init__(self, noise: Noise) -> None:
        self.noise = noise

    def random(self) -> float:
        return self.noise.random()

    def uniform(self, low: float, high: float) -> float:
        return self.noise.uniform(low, high)


def import_csv(specs: list[DeviceSpec]) -> str:
    """The CSV body of POST /api/v1/devices/import for specs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(IMPORT_COLUMNS)
    for spec in specs:
        fixed = {"kind": spec.kind, "endpoint": spec.endpoint, "serial": spec.serial,
                 "manufacturer": spec.manufacturer, "model": spec.model,
                 "firmware_version": spec.firmware_version, "lat": spec.lat, "lon": spec.lon,
                 "district": spec.district, "tags": SIMULATOR_TAG}
        row = fixed | spec.attributes
        writer.writerow(["" if row.get(c) is None else row[c] for c in IMPORT_COLUMNS])
    return buffer.getvalue()


def from_api(device: dict[str, Any]) -> DeviceSpec:
    """A spec from one item of GET /api/v1/devices."""
    location = device.get("location") or {}
    attributes = {k: device[k] for k in _ATTRIBUTES if device.get(k) is not None}
    return DeviceSpec(device["kind"], device["endpoint"], float(location.get("lat", 0.0)),
                      float(location.get("lon", 0.0)), device.get("district"), device.get("serial"),
                      device.get("manufacturer"), device.get("model"),
                      device.get("firmware_version"), attributes)


def from_file(path: Path) -> list[DeviceSpec]:
    """Specs from a CSV in Fleet's export format (GET /api/v1/devices/export)."""
    specs = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            if row.get("status") == "decommissioned" or row.get("kind") not in KINDS:
                continue
            attributes = {k: (_number(row[k]) if k in _NUMERIC else row[k])
                          for k in _ATTRIBUTES if row.get(k)}
            specs.append(DeviceSpec(row["kind"], row["endpoint"], float(row.get("lat") or 0),
                                    float(row.get("lon") or 0), row.get("district") or None,
                                    row.get("serial") or None, row.get("manufacturer") or None,
                                    row.get("model") or None, row.get("firmware_version") or None,
                                    attributes))
    return specs


_ATTRIBUTES = ("nominal_wattage", "pole_number", "lamp_type", "capacity_litres", "waste_kind",
               "ssid", "band")


_NUMERIC = ("nominal_wattage", "capacity_litres")


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text
