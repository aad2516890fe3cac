"""Devices, their kind-specific attributes and filters over them (groups live in fleet.groups)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


class DeviceKind(enum.StrEnum):
    STREETLIGHT = "streetlight"
    WASTE_BIN = "waste_bin"
    WIFI_AP = "wifi_ap"


class DeviceStatus(enum.StrEnum):
    PROVISIONED = "provisioned"
    ONLINE = "online"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"
    DECOMMISSIONED = "decommissioned"


class LampType(enum.StrEnum):
    LED = "led"
    HIGH_PRESSURE_SODIUM = "high_pressure_sodium"
    LOW_PRESSURE_SODIUM = "low_pressure_sodium"
    METAL_HALIDE = "metal_halide"
    MERCURY_VAPOUR = "mercury_vapour"
    FLUORESCENT = "fluorescent"
    INDUCTION = "induction"
    OTHER = "other"


class WasteKind(enum.StrEnum):
    """FIWARE Smart Data Models `WasteContainer.storedWasteKind` values."""

    ORGANIC = "organic"
    INORGANIC = "inorganic"
    GLASS = "glass"
    OIL = "oil"
    PLASTIC = "plastic"
    METAL = "metal"
    PAPER = "paper"
    BATTERIES = "batteries"
    ELECTRONICS = "electronics"
    HAZARDOUS = "hazardous"
    OTHER = "other"


class WifiBand(enum.StrEnum):
    GHZ_2_4 = "2.4GHz"
    GHZ_5 = "5GHz"
    GHZ_6 = "6GHz"
    DUAL = "dual"


# Which kind-specific attribute belongs to which kind; validation lives in validation.py.
KIND_ATTRIBUTES: dict[DeviceKind, tuple[str, ...]] = {
    DeviceKind.STREETLIGHT: ("nominal_wattage", "pole_number", "lamp_type"),
    DeviceKind.WASTE_BIN: ("capacity_litres", "waste_kind"),
    DeviceKind.WIFI_AP: ("ssid", "band"),
}
ALL_KIND_ATTRIBUTES: tuple[str, ...] = tuple(a for names in KIND_ATTRIBUTES.values() for a in names)

# Fields an operator may set; `status` only to the values people decide (the rest the network does).
EDITABLE_FIELDS = ("serial", "manufacturer", "model", "firmware_version", "lat", "lon", "district",
                   "address", "installed_at", "status", "tags", *ALL_KIND_ATTRIBUTES)
OPERATOR_STATUSES = (DeviceStatus.PROVISIONED, DeviceStatus.MAINTENANCE)


@dataclass(frozen=True, slots=True)
class Location:
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Device:
    id: UUID
    kind: DeviceKind
    endpoint: str
    serial: str | None
    manufacturer: str | None
    model: str | None
    firmware_version: str | None
    location: Location
    district: str | None
    address: str | None
    installed_at: datetime | None
    status: DeviceStatus
    tags: list[str]
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    decommissioned_at: datetime | None = None
    distance_m: int | None = None  # whole metres from `near`, when the list was asked for one


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A validated device about to be created (by the API, an import or the demo seed)."""

    kind: DeviceKind
    endpoint: str
    lat: float
    lon: float
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    district: str | None = None
    address: str | None = None
    installed_at: datetime | None = None
    status: DeviceStatus = DeviceStatus.PROVISIONED
    tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BoundingBox:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


@dataclass(frozen=True, slots=True)
class Circle:
    lat: float
    lon: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """A filter over the registry; also what a dynamic group saves and a bulk command targets."""

    kind: DeviceKind | None = None
    status: DeviceStatus | None = None
    district: str | None = None
    tag: str | None = None
    firmware: str | None = None
    bbox: BoundingBox | None = None
    near: Circle | None = None
    # Members of this group (static or dynamic); resolved by the repository.
    group_id: UUID | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_cursor: str | None
