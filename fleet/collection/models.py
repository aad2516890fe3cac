"""Waste collection in the sanitation department's words: a city's set-up (depots, disposal sites,
vehicles, times bins must not be collected, settings), fill forecasts, pickup plans and the routes
crews drive.

Three layers meet here, so that parallel work agrees on them:
- set-up and requests over REST: msgspec Structs (typed commands);
- the routing problem and its solution live beside, in fleet.collection.routing_problem;
- what is stored and served: plans, routes, stops, bins left out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime, time  # noqa: F401 - `date` annotates fields named date
from typing import Annotated
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from fleet.registry.models import WasteKind

Latitude = Annotated[float, Meta(ge=-90, le=90, description="WGS84 latitude in degrees")]
Longitude = Annotated[float, Meta(ge=-180, le=180, description="WGS84 longitude in degrees")]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Percent = Annotated[float, Meta(gt=0, le=100)]
# Each 1..7, checked by the set-up service (the OpenAPI document cannot carry a list item's range).
Weekdays = Annotated[list[int], Meta(min_length=1, max_length=7, description="ISO weekdays, 1 = Monday")]

# Local wall-clock times come as "HH:MM" (seconds allowed), as the city's other schedules do.
ClockTime = Annotated[str, Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$", description="local time, HH:MM")]


def clock(value: str | time) -> time:
    return value if isinstance(value, time) else time.fromisoformat(value)


DEFAULT_THRESHOLD_PERCENT = 80.0
DEFAULT_TIME_LIMIT_S = 30
MAX_TIME_LIMIT_S = 600


# -- set-up ------------------------------------------------------------------------------------

class SiteLocation(Struct, forbid_unknown_fields=True, frozen=True):
    """A place of the set-up (its own name: the OpenAPI document already has the devices' Location)."""

    lat: Latitude
    lon: Longitude


Location = SiteLocation


class DepotCreate(Struct, forbid_unknown_fields=True):
    """Where trucks start and end their shift."""

    name: Name
    location: Location


class DisposalSiteCreate(Struct, forbid_unknown_fields=True):
    """Where a full truck unloads mid-shift."""

    name: Name
    location: Location
    waste_kinds: Annotated[list[WasteKind], Meta(description="kinds it takes; empty: every kind")] = []


class VehicleCreate(Struct, forbid_unknown_fields=True):
    """`count` alike trucks for one waste kind, based at a depot, working one shift a day."""

    name: Name
    waste_kind: WasteKind
    capacity_litres: Annotated[int, Meta(gt=0, le=1_000_000)]
    depot_id: UUID
    shift_start: ClockTime
    shift_end: Annotated[ClockTime, Meta(description="local time, HH:MM; at or before shift_start: the "
                                                     "next morning (a night round, 22:00-06:00)")]
    count: Annotated[int, Meta(ge=1, le=1000)] = 1
    cost_per_km: Annotated[float, Meta(ge=0, le=10_000)] = 1.0
    cost_per_hour: Annotated[float, Meta(ge=0, le=100_000)] = 30.0


class TimeWindowCreate(Struct, forbid_unknown_fields=True):
    """No collection between `starts` and `ends` (local time) for the bins it covers: those of a
    district, within `radius_m` of a point, or listed; none of these: every bin of the city."""

    starts: ClockTime
    ends: ClockTime
    name: Annotated[str, Meta(max_length=200)] = ""
    weekdays: Weekdays = msgspec.field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])
    district: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    center: Location | None = None
    radius_m: Annotated[float, Meta(gt=0, le=100_000)] | None = None
    device_ids: Annotated[list[UUID], Meta(max_length=10_000)] = []


class CollectionSettings(Struct, forbid_unknown_fields=True, omit_defaults=False):
    """A city's collection settings (GET/PATCH /api/v1/collection/settings)."""

    threshold_percent: Percent = DEFAULT_THRESHOLD_PERCENT
    service_s: Annotated[int, Meta(ge=0, le=3600, description="time to empty one bin")] = 90
    unload_s: Annotated[int, Meta(ge=0, le=14_400, description="time to unload at a disposal site")] = 900
    road_factor: Annotated[float, Meta(ge=1, le=5, description="road over great-circle distance")] = 1.35
    speed_kmh: Annotated[float, Meta(gt=0, le=130)] = 22.0
    plan_at: Annotated[time | None, Meta(description="local time the evening's plan for tomorrow is built; "
                                                     "null: never")] = time(18, 0)
    time_limit_s: Annotated[int, Meta(ge=1, le=MAX_TIME_LIMIT_S)] = DEFAULT_TIME_LIMIT_S
    round_days: Annotated[int, Meta(ge=1, le=14, description="the fixed round plans are compared with: "
                                                             "every bin every this many days")] = 2


class SettingsUpdate(Struct, forbid_unknown_fields=True, omit_defaults=True):
    threshold_percent: Percent | UnsetType = UNSET
    service_s: Annotated[int, Meta(ge=0, le=3600)] | UnsetType = UNSET
    unload_s: Annotated[int, Meta(ge=0, le=14_400)] | UnsetType = UNSET
    road_factor: Annotated[float, Meta(ge=1, le=5)] | UnsetType = UNSET
    speed_kmh: Annotated[float, Meta(gt=0, le=130)] | UnsetType = UNSET
    plan_at: ClockTime | None | UnsetType = UNSET
    time_limit_s: Annotated[int, Meta(ge=1, le=MAX_TIME_LIMIT_S)] | UnsetType = UNSET
    round_days: Annotated[int, Meta(ge=1, le=14)] | UnsetType = UNSET


@dataclass(frozen=True, slots=True)
class Depot:
    id: UUID
    name: str
    lat: float
    lon: float
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DisposalSite:
    id: UUID
    name: str
    lat: float
    lon: float
    waste_kinds: tuple[str, ...]
    created_at: datetime

    def takes(self, waste_kind: str) -> bool:
        return not self.waste_kinds or waste_kind in self.waste_kinds


@dataclass(frozen=True, slots=True)
class Vehicle:
    id: UUID
    name: str
    waste_kind: str
    capacity_litres: int
    count: int
    depot_id: UUID
    shift_start: time
    shift_end: time
    cost_per_km: float
    cost_per_hour: float
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TimeWindow:
    id: UUID
    name: str
    starts: time
    ends: time
    weekdays: tuple[int, ...]
    district: str | None
    lat: float | None
    lon: float | None
    radius_m: float | None
    device_ids: tuple[UUID, ...]
    created_at: datetime


# -- fill forecasts ----------------------------------------------------------------------------

class EmptyingSource(enum.StrEnum):
    DROP = "drop"          # the fill fell sharply between two readings
    EXECUTE = "execute"    # the "emptied" Execute (/3435/0/9) was sent to the bin
    STOP = "stop"          # a crew marked its route stop done


@dataclass(frozen=True, slots=True)
class FillForecast:
    """One bin's fill now and ahead. Hours are None when the bin will not get there within the
    forecast's horizon; `*_low`/`*_high` bound the time with the uncertainty band."""

    device_id: UUID
    waste_kind: str | None
    district: str | None
    fill_now: float | None
    fill_at: datetime | None         # when fill_now was read
    fill_until: float | None         # expected at `until`
    until: datetime
    rate_per_hour: float | None      # mean over the next day
    hours_to_threshold: float | None
    hours_to_threshold_low: float | None
    hours_to_threshold_high: float | None
    hours_to_full: float | None
    threshold_percent: float
    last_emptied_at: datetime | None
    # 'bin': its own history; 'district': too little history, its district's rate for its kind;
    # 'city': neither, the city's for its kind; 'none': nothing to go on.
    basis: str
    endpoint: str | None = None


# -- plans, routes and stops ------------------------------------------------------------------

class PlanStatus(enum.StrEnum):
    SOLVING = "solving"
    READY = "ready"
    FAILED = "failed"
    SUPERSEDED = "superseded"


class PlanSource(enum.StrEnum):
    API = "api"
    SCHEDULE = "schedule"
    REPLAN = "replan"


class UnassignedReason(enum.StrEnum):
    NO_VEHICLE = "no_vehicle"                   # no vehicle collects its waste kind
    NO_DISPOSAL_SITE = "no_disposal_site"       # bigger than a truck with nowhere to unload
    TOO_LARGE = "too_large"                     # more litres than any truck carries
    OUTSIDE_SHIFT = "outside_shift"             # its allowed times miss every shift
    UNREACHABLE = "unreachable"                 # too far to reach and return within a shift
    NO_CAPACITY = "no_capacity"                 # the fleet's trucks and hours are used up
    NO_LOCATION = "no_location"                 # the bin has no position
    NO_FILL_READING = "no_fill_reading"         # nothing known of its fill; left to a crew


class RouteStatus(enum.StrEnum):
    PLANNED = "planned"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class StopStatus(enum.StrEnum):
    PLANNED = "planned"
    DONE = "done"
    SKIPPED = "skipped"


class SkipReason(enum.StrEnum):
    BLOCKED = "blocked"
    NOT_FOUND = "not_found"
    DAMAGED = "damaged"   # opens a work order to repair the bin


class PlanRequest(Struct, forbid_unknown_fields=True):
    """POST /api/v1/collection/plans."""

    date: date
    waste_kind: WasteKind | None = None
    time_limit_s: Annotated[int, Meta(ge=1, le=MAX_TIME_LIMIT_S)] | None = None


class StopUpdate(Struct, forbid_unknown_fields=True):
    """A crew marks a stop: done, or skipped with why."""

    status: StopStatus
    reason: SkipReason | None = None
    notes: Annotated[str, Meta(max_length=2000)] | None = None


class RouteAssign(Struct, forbid_unknown_fields=True):
    crew_id: UUID | None


@dataclass(frozen=True, slots=True)
class Stop:
    id: UUID
    route_id: UUID
    seq: int
    kind: str                   # 'bin' | 'disposal'
    device_id: UUID | None
    disposal_site_id: UUID | None
    lat: float
    lon: float
    arrival: datetime
    load_after: int
    expected_fill: float | None
    required: bool
    status: str
    skip_reason: str | None = None
    done_source: str | None = None
    done_at: datetime | None = None
    done_by: str | None = None
    notes: str | None = None
    work_order_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class Route:
    id: UUID
    plan_id: UUID
    vehicle_id: UUID
    vehicle_number: int
    crew_id: UUID | None
    status: str
    starts_at: datetime
    ends_at: datetime
    distance_m: float
    duration_s: float
    actual_km: float | None
    bins_emptied: int
    started_at: datetime | None
    finished_at: datetime | None
    version: int
    stops: tuple[Stop, ...] = ()


@dataclass(frozen=True, slots=True)
class Unassigned:
    device_id: UUID
    reason: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class PlanSummary:
    """What a plan is, beside the fixed round (every bin of the kinds planned, emptied every
    `round_days`, all on one day's share of the round): stops and km saved."""

    must_collect: int = 0
    may_collect: int = 0
    stops: int = 0
    optional_visited: int = 0
    unassigned: int = 0
    reloads: int = 0
    fixed_round_stops: float = 0
    fixed_round_km: float = 0
    stops_saved: float = 0
    km_saved: float = 0
    solver_runtime_s: float = 0


@dataclass(frozen=True, slots=True)
class Plan:
    id: UUID
    tenant_id: UUID
    date: date
    waste_kind: str | None
    status: str
    source: str
    replaces_id: UUID | None
    time_limit_s: int
    error: str | None
    cost: float | None
    distance_m: float | None
    duration_s: float | None
    summary: dict
    created_at: datetime
    solved_at: datetime | None
    routes: tuple[Route, ...] = ()
    unassigned: tuple[Unassigned, ...] = field(default=())


# -- routes as crews and the control room see them (fleet.collection.driving) -----------------

class StopDevice(Struct):
    """The bin at a stop, as the crew finds it: where, what kind, how full it last said it was."""

    id: UUID
    endpoint: str
    address: str | None
    district: str | None
    waste_kind: str | None
    status: str
    fill_now: float | None = None
    fill_at: datetime | None = None


class RouteStop(Struct):
    id: UUID
    seq: int
    kind: str
    lat: float
    lon: float
    arrival: datetime
    load_after: int
    required: bool
    status: str
    device: StopDevice | None = None
    disposal_site_id: UUID | None = None
    expected_fill: float | None = None
    skip_reason: str | None = None
    done_source: Annotated[str | None, Meta(description="`crew`: marked on the tablet; `fill`: the bin's own "
                                                        "fill drop completed it")] = None
    done_at: datetime | None = None
    done_by: str | None = None
    notes: str | None = None
    work_order_id: Annotated[UUID | None, Meta(description="the repair opened for a damaged bin")] = None


class RouteProgress(Struct):
    """For the control room: how far the crew is, against the plan."""

    stops: int
    done: int
    skipped: int
    left: int
    bins: int
    bins_emptied: int
    percent: Annotated[float, Meta(description="stops done or skipped, of all, in percent")]
    expected_duration_s: float
    actual_duration_s: Annotated[float | None, Meta(description="since the route started; to its finish once "
                                                                "completed")] = None
    expected_km: float = 0.0
    actual_km: float | None = None
    # Seconds the crew is behind the plan at its last stop done (negative: ahead).
    behind_s: float | None = None


class RouteOut(Struct):
    """A route: GET /api/v1/routes/{id} (with its stops in order) and the lists (without)."""

    id: UUID
    plan_id: UUID
    date: date
    vehicle_id: UUID
    vehicle_number: int
    status: str
    starts_at: datetime
    ends_at: datetime
    distance_m: float
    duration_s: float
    bins_emptied: int
    version: int
    progress: RouteProgress
    crew_id: UUID | None = None
    waste_kind: str | None = None
    actual_km: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    stops: list[RouteStop] | None = None


class RoutePage(Struct):
    items: list[RouteOut]
