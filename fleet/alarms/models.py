"""Alarm types, severities, the findings rules hand to the lifecycle, and alarms as people see them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

import msgspec


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"


class AlarmStatus(enum.StrEnum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class AlarmType(enum.StrEnum):
    # streetlights
    LAMP_FAILURE = "lamp_failure"
    DAY_BURNER = "day_burner"
    DARK_AT_NIGHT = "dark_at_night"
    LEVEL_NOT_FOLLOWING = "level_not_following"
    POWER_ANOMALY = "power_anomaly"
    ENERGY_METER_BACKWARDS = "energy_meter_backwards"
    # waste bins
    BIN_OVERFLOW = "bin_overflow"
    BIN_FIRE = "bin_fire"
    BIN_KNOCKED_OVER = "bin_knocked_over"
    FILL_SENSOR_STUCK = "fill_sensor_stuck"
    # access points
    AP_DOWN = "ap_down"
    AP_OVERLOADED = "ap_overloaded"
    AP_THROUGHPUT_COLLAPSE = "ap_throughput_collapse"
    # every device
    DEVICE_OFFLINE = "device_offline"
    LOW_BATTERY = "low_battery"
    CLOCK_SKEW = "clock_skew"
    # what people see that no sensor does
    CITIZEN_REPORT = "citizen_report"
    # a firmware campaign's update of the device failed (fleet.campaigns)
    FIRMWARE_UPDATE_FAILED = "firmware_update_failed"


KINDS: dict[AlarmType, tuple[str, ...]] = {
    AlarmType.LAMP_FAILURE: ("streetlight",),
    AlarmType.DAY_BURNER: ("streetlight",),
    AlarmType.DARK_AT_NIGHT: ("streetlight",),
    AlarmType.LEVEL_NOT_FOLLOWING: ("streetlight",),
    AlarmType.POWER_ANOMALY: ("streetlight",),
    AlarmType.ENERGY_METER_BACKWARDS: ("streetlight",),
    AlarmType.BIN_OVERFLOW: ("waste_bin",),
    AlarmType.BIN_FIRE: ("waste_bin",),
    AlarmType.BIN_KNOCKED_OVER: ("waste_bin",),
    AlarmType.FILL_SENSOR_STUCK: ("waste_bin",),
    AlarmType.AP_DOWN: ("wifi_ap",),
    AlarmType.AP_OVERLOADED: ("wifi_ap",),
    AlarmType.AP_THROUGHPUT_COLLAPSE: ("wifi_ap",),
    AlarmType.DEVICE_OFFLINE: ("streetlight", "waste_bin", "wifi_ap"),
    AlarmType.LOW_BATTERY: ("streetlight", "waste_bin", "wifi_ap"),
    AlarmType.CLOCK_SKEW: ("streetlight", "waste_bin", "wifi_ap"),
    AlarmType.CITIZEN_REPORT: ("streetlight", "waste_bin", "wifi_ap"),
    AlarmType.FIRMWARE_UPDATE_FAILED: ("streetlight", "waste_bin", "wifi_ap"),
}

# Severity an alarm of each type opens with unless the city's settings say otherwise.
DEFAULT_SEVERITY: dict[AlarmType, Severity] = {
    AlarmType.LAMP_FAILURE: Severity.MAJOR,
    AlarmType.DAY_BURNER: Severity.MINOR,
    AlarmType.DARK_AT_NIGHT: Severity.MAJOR,
    AlarmType.LEVEL_NOT_FOLLOWING: Severity.MINOR,
    AlarmType.POWER_ANOMALY: Severity.MINOR,
    AlarmType.ENERGY_METER_BACKWARDS: Severity.WARNING,
    AlarmType.BIN_OVERFLOW: Severity.MAJOR,
    AlarmType.BIN_FIRE: Severity.CRITICAL,
    AlarmType.BIN_KNOCKED_OVER: Severity.MAJOR,
    AlarmType.FILL_SENSOR_STUCK: Severity.MINOR,
    AlarmType.AP_DOWN: Severity.MAJOR,
    AlarmType.AP_OVERLOADED: Severity.WARNING,
    AlarmType.AP_THROUGHPUT_COLLAPSE: Severity.MINOR,
    AlarmType.DEVICE_OFFLINE: Severity.MAJOR,
    AlarmType.LOW_BATTERY: Severity.MINOR,
    AlarmType.CLOCK_SKEW: Severity.WARNING,
    AlarmType.CITIZEN_REPORT: Severity.MINOR,
    AlarmType.FIRMWARE_UPDATE_FAILED: Severity.MAJOR,
}


@dataclass(frozen=True, slots=True)
class Finding:
    """What one rule concluded about one device at one moment.

    `present=True` raises (or repeats) the alarm of that (device, type); `present=False` says
    the condition was looked at and is absent, which clears an open alarm once it stays absent
    (hysteresis). A rule that could not judge (missing data) returns no finding at all.
    """

    tenant_id: UUID
    device_id: UUID
    type: AlarmType
    present: bool
    at: datetime
    value: Any = None
    detail: str = ""
    severity: Severity | None = None  # None: the type's configured severity


@dataclass(frozen=True, slots=True)
class Alarm:
    id: UUID
    tenant_id: UUID
    device_id: UUID
    type: str
    severity: Severity
    status: AlarmStatus
    count: int
    first_seen: datetime
    last_seen: datetime
    value: Any
    detail: str
    source: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledge_note: str | None
    cleared_at: datetime | None
    cleared_by: str | None
    clear_reason: str | None
    shelved_until: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime
    verified_at: datetime | None = None
    # Where the device stands, for lists and maps.
    kind: str | None = None
    district: str | None = None
    lat: float | None = None
    lon: float | None = None
    distance_m: int | None = None  # from `near`, when the list was asked for one


class ChangeKind(enum.StrEnum):
    RAISED = "raised"              # a new open alarm
    REPEATED = "repeated"          # an open alarm seen again (count + 1)
    CLEARED = "cleared"            # by its condition, by hand, by a work order, by decommissioning
    PROVEN_CLEAR = "proven_clear"  # the device reported absent after a work order cleared it


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """One transition, handed (in the transaction that made it) to whoever reacts to alarms:
    work orders open from alarms, are proven by them, and are reopened by a repeat."""

    tenant_id: UUID
    alarm_id: UUID
    device_id: UUID
    type: str
    severity: Severity
    kind: ChangeKind
    at: datetime
    # A shelved alarm (or device) is still tracked but silenced: no work order opens for it.
    shelved: bool = False


# What people ask of an alarm (decoded once at the edge; the service checks what needs a clock).
Note = Annotated[str, msgspec.Meta(max_length=2000)]


class Acknowledge(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    note: Note = ""


class ManualClear(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    note: Note = ""


class Shelve(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Silence until a time, or for some minutes from now (exactly one of the two)."""

    __exactly_one_of__: ClassVar = ("until", "minutes")
    until: datetime | None = None
    minutes: Annotated[int, msgspec.Meta(ge=1, le=60 * 24 * 90)] | None = None
    reason: Note = ""


class DeviceShelve(Shelve, forbid_unknown_fields=True, kw_only=True):
    device_id: UUID


@dataclass(frozen=True, slots=True)
class Shelving:
    id: UUID
    alarm_id: UUID | None
    device_id: UUID | None
    until: datetime
    reason: str
    created_by: str
    created_at: datetime


OPEN_STATUSES = ("active", "acknowledged")


@dataclass(frozen=True, slots=True)
class AlarmQuery:
    """Filters of the alarm list; statuses empty = open ones (active and acknowledged)."""

    statuses: tuple[str, ...] = OPEN_STATUSES
    severity: str | None = None
    type: str | None = None
    kind: str | None = None
    district: str | None = None
    device_id: UUID | None = None
    group_id: UUID | None = None
    bbox: tuple[float, float, float, float] | None = None   # min_lon, min_lat, max_lon, max_lat
    near: tuple[float, float, float] | None = None          # lat, lon, radius_m
    shelved: bool | None = None


@dataclass(frozen=True, slots=True)
class AlarmCounts:
    total: int
    by_severity: dict[str, int]
    by_district: dict[str, int]
    by_type: dict[str, int]
