"""A city's mix for the alarm benchmarks: streetlights, waste bins and access points, each
reporting the paths its own kind's rules read, a few of them with a fault in every Send.

The ingest benchmark's devices are all streetlights sending one sensor node's pack (bin fill,
battery, temperature ...), so only its battery level woke a rule. Here device i is of a kind
(6 in 10 streetlights, 3 bins, 1 access point) and sends 10 readings of that kind, so every
rule of every kind is judged at the ingest rate; FAULTY_PER_MILLE of them carry a fault (a
failed lamp or a lamp lit by day, an overflowing bin with a flat battery, an access point's
radio in error), so AlarmService.apply raises and repeats alarms throughout. Counters (energy,
bytes) grow with each Send and every device reports its clock as the real time, so no meter
runs backwards and no clock is skewed unless a fault says so.

As with bench.coap.senml.SenmlPack, every point of pack (client, seq) is timed base_time + seq,
so bench.ingest.database.verify counts rows per acknowledged pack the same way.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import cbor2

from fleet.alarms.rules.models import DeviceContext
from fleet.alarms.rules.streetlight import daylight_minutes
from protocols.coap import message

# Where the bench city lies (bench.ingest.database.prepare): its sun decides whether a
# healthy streetlight is lit.
CITY_TIMEZONE, CITY_LAT, CITY_LON = "Asia/Seoul", 37.55, 126.97
FAULTY_PER_MILLE = 30
POINTS = 10
_FLOAT64 = struct.Struct(">d")
_BT = b"\x22\xfb"  # key -3 (bt), float64 follows
COUNTERS_FROM = 1_780_000_000  # counters read `start` at this UNIX time (2026-05-28)


def kind_of(index: int) -> str:
    tenth = index % 10
    return "streetlight" if tenth < 6 else "waste_bin" if tenth < 9 else "wifi_ap"


def faulty(index: int) -> bool:
    """About FAULTY_PER_MILLE in 1000 devices, spread over the kinds (a multiplicative hash)."""
    return (index * 2654435761) % 1000 < FAULTY_PER_MILLE


def nominal_wattage(index: int) -> int:
    return 60 + (index * 37) % 5 * 20  # 60-140 W


def device_row(index: int, endpoint: str) -> dict:
    """The registry row of device `index` (bench.ingest.database.prepare's `row` hook)."""
    row = {"kind": kind_of(index), "endpoint": endpoint,
           "lat": CITY_LAT + index % 1000 * 1e-4, "lon": CITY_LON + index // 1000 * 1e-4}
    if row["kind"] == "streetlight":
        row["attributes"] = {"nominal_wattage": nominal_wattage(index)}
    return row


def night_now(at: datetime | None = None) -> bool:
    """Whether the bench city's lights should be lit now (after sunset, before sunrise)."""
    ctx = DeviceContext(tenant_id=None, device_id=None, kind="streetlight", lat=CITY_LAT,  # type: ignore[arg-type]
                        lon=CITY_LON, timezone=CITY_TIMEZONE)
    return daylight_minutes(ctx, at or datetime.now(UTC)) < 0


# A reading: (path, value). A value is a constant (float or bool), or ("grows", start, per
# second) for a counter, or "clock" for the real UNIX time at the Send.
Reading = tuple[str, object]


def readings(index: int, lit: bool) -> list[Reading]:
    kind, fault = kind_of(index), faulty(index)
    phase = index * 37 % 100
    if kind == "streetlight":
        nominal = nominal_wattage(index)
        stuck_lit = fault and index % 2 == 1  # a day burner by day, healthy at night
        failed = fault and not stuck_lit      # lamp failure: no light, no power
        level = 100.0 if lit or stuck_lit else 0.0
        power = 0.5 if failed else (nominal * level / 100 * (0.97 + phase / 2000) if level else 1.5)
        return [("/3416/0/3", level), ("/3416/0/46", round(power, 1)),
                ("/3416/0/47", ("grows", 1000.0 + phase, power / 3.6e6)),
                ("/3418/0/4", round(power + 2.0, 1)),
                ("/3418/0/6", ("grows", 1e6 + phase, (power + 2.0) / 3600)),
                ("/3418/0/35", level), ("/3416/0/5", failed), ("/3/0/13", "clock"),
                ("/3303/0/5700", 20.0 + phase / 10), ("/3301/0/5700", 5.0 if lit else 20000.0)]
    if kind == "waste_bin":
        return [("/3435/0/2", 97.0 if fault else 10.0 + phase * 0.7), ("/3435/0/3", 30.0 + phase),
                ("/3303/0/5700", 12.0 + phase / 20), ("/3435/0/22", False), ("/3429/0/1", 0.05),
                ("/3429/0/6", False), ("/3/0/9", 15.0 if fault else 40.0 + phase / 2), ("/3/0/13", "clock"),
                ("/3304/0/5700", 50.0 + phase / 5), ("/3316/0/5700", 3.3)]
    rate = 20_000.0 + phase * 500
    return [("/12/0/3", 1.0), ("/12/1/3", 2.0 if fault else 1.0),
            ("/12/0/33", ("grows", 1e9, rate)), ("/12/0/34", ("grows", 2e8, rate / 5)),
            ("/12/1/33", ("grows", 1e9, 0.0 if fault else rate)), ("/12/1/34", ("grows", 2e8, 0.0 if fault else rate / 5)),
            ("/4/0/6", 30.0 + phase * 0.4), ("/3/0/13", "clock"), ("/4/0/2", -60.0 - phase / 5), ("/4/0/3", 80.0)]


def _record(path: str, value: object, extra: bytes = b"") -> bytes:
    """A SenML CBOR record {n: path, v|vb: value[, bt]} (bt appended by the caller)."""
    head = bytes((0xA3 if extra else 0xA2,)) + b"\x00" + cbor2.dumps(path)
    if isinstance(value, bool):
        return head + (b"\x04\xf5" if value else b"\x04\xf4") + extra
    return head + b"\x02\xfb" + _FLOAT64.pack(float(value)) + extra


@dataclass
class CityPacks:
    """Callable ``(client_index, seq) -> bytes``: the Send of device `client_index` (a kind's
    10 readings), timed base_time + seq."""

    base_time: int = field(default_factory=lambda: int(time.time()))
    lit: bool = field(default_factory=night_now)
    index_of: Callable[[int], int] = lambda client: client
    points: int = POINTS
    content_format: int = message.SENML_CBOR
    _devices: dict[int, tuple[bytes, bytes, list[tuple[bytes, object]]]] = field(default_factory=dict, repr=False)

    def _device(self, client: int) -> tuple[bytes, bytes, list[tuple[bytes, object]]]:
        """(first record without bt, static records, [(record head, dynamic value)])."""
        found = self._devices.get(client)
        if found is None:
            listed = readings(self.index_of(client), self.lit)
            first_path, first_value = listed[0]
            first = _record(first_path, first_value, _BT)[: -len(_BT)]
            static = b"".join(_record(p, v) for p, v in listed[1:] if not isinstance(v, tuple | str))
            dynamic = [(_record(p, 0.0)[:-8], v) for p, v in listed[1:] if isinstance(v, tuple | str)]
            found = self._devices[client] = (first, static, dynamic)
        return found

    def __call__(self, client: int, seq: int) -> bytes:
        first, static, dynamic = self._device(client)
        at = self.base_time + seq
        parts = [b"\x8a", first, _BT, _FLOAT64.pack(float(at)), static]
        for head, value in dynamic:
            if value == "clock":
                parts += (head, _FLOAT64.pack(time.time()))
            else:
                _, start, per_s = value  # by the pack's time: it keeps growing across rounds
                parts += (head, _FLOAT64.pack(start + per_s * (at - COUNTERS_FROM)))
        return b"".join(parts)
