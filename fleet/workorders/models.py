"""Work orders, their lifecycle, the city's work-order rules, and the shapes they travel in."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from msgspec import UNSET, Meta, Struct, UnsetType

from fleet.alarms.models import AlarmType

WorkOrderTypeName = Literal["repair_lamp", "replace_controller", "empty_bin", "clean_or_repair_bin",
                            "inspect_access_point", "other"]
PriorityName = Literal["low", "medium", "high", "urgent"]
StatusName = Literal["new", "assigned", "en_route", "in_progress", "done", "cannot_fix", "cancelled",
                     "verified", "reopened"]
SeverityName = Literal["critical", "major", "minor", "warning"]
# Who a new work order goes to: nobody yet, or the crew nearest to it (fleet.workorders.assignment).
AssignName = Literal["none", "nearest_crew"]


class Status(enum.StrEnum):
    NEW = "new"
    ASSIGNED = "assigned"
    EN_ROUTE = "en_route"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANNOT_FIX = "cannot_fix"
    CANCELLED = "cancelled"
    # Set only by the device's own reports (fleet.workorders.proof), never by a PATCH.
    VERIFIED = "verified"
    REOPENED = "reopened"


OPEN = frozenset({Status.NEW, Status.ASSIGNED, Status.EN_ROUTE, Status.IN_PROGRESS, Status.REOPENED})
# What a crew still has to do: assigned to it and not closed.
CREW_OPEN = OPEN - {Status.NEW}
# Closing one of these returns its devices to service and, for `done`, clears its alarms.
CLOSING = frozenset({Status.DONE, Status.CANNOT_FIX, Status.CANCELLED})
_WORKING = {Status.ASSIGNED, Status.EN_ROUTE, Status.IN_PROGRESS, Status.CANCELLED}

# Where people may move a work order from each status.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.ASSIGNED, Status.CANCELLED}),
    Status.ASSIGNED: frozenset({Status.NEW, Status.EN_ROUTE, Status.IN_PROGRESS, Status.CANCELLED}),
    Status.EN_ROUTE: frozenset({Status.ASSIGNED, Status.IN_PROGRESS, Status.CANCELLED}),
    Status.IN_PROGRESS: frozenset({Status.EN_ROUTE, Status.DONE, Status.CANNOT_FIX, Status.CANCELLED}),
    Status.REOPENED: frozenset(_WORKING),
    Status.CANNOT_FIX: frozenset({Status.ASSIGNED, Status.CANCELLED}),
    Status.DONE: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.VERIFIED: frozenset(),
}

# The work a repair is: these are proven (verified) or reopened by the device's next reports.
REPAIRS = frozenset({"repair_lamp", "replace_controller", "clean_or_repair_bin", "inspect_access_point", "other"})

# Hours from creation to `due_by` per priority; a deadline of whole days runs to the end of that
# local day in the city's timezone (a crew plans in days, not in hours past creation).
DEFAULT_DUE_HOURS: dict[str, int] = {"urgent": 4, "high": 24, "medium": 72, "low": 168}
DEFAULT_REOPEN_WINDOW_DAYS = 7
# How long a position a crew's tablet reported counts as where the crew is; after that, its home base.
DEFAULT_CREW_POSITION_FRESH_MINUTES = 120


class WorkOrderLocation(Struct):
    lat: Annotated[float, Meta(ge=-90, le=90, description="WGS84 latitude in degrees")]
    lon: Annotated[float, Meta(ge=-180, le=180, description="WGS84 longitude in degrees")]


MAX_NOTES = 10_000  # the column's own limit (0012)
Notes = Annotated[str, Meta(max_length=MAX_NOTES)]
ResolutionCode = Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,64}$",
                                     description="how it ended, e.g. `lamp_replaced`, `no_fault_found`")]


class WorkOrderCreate(Struct, forbid_unknown_fields=True):
    type: WorkOrderTypeName
    device_ids: Annotated[list[UUID], Meta(max_length=100)] = []
    priority: PriorityName = "medium"
    notes: Notes = ""
    location: Annotated[WorkOrderLocation | None, Meta(description="default: the centroid of the devices")] = None
    crew_id: Annotated[UUID | None, Meta(description="assign at once (status `assigned`)")] = None
    assign: Annotated[AssignName, Meta(description="`nearest_crew`: assign to the crew nearest to the work "
                                                   "order (unassigned when no crew has a position or home "
                                                   "base); not together with `crew_id`")] = "none"
    due_by: Annotated[datetime | None, Meta(description="default: the city's deadline for the priority")] = None
    alarm_id: Annotated[UUID | None, Meta(description=(
        "the alarm this work order answers (its device joins `device_ids`): done clears it, the "
        "device's reports prove or reopen it, and the city's rules open no second one for it"))] = None


class WorkOrderUpdate(Struct, forbid_unknown_fields=True, omit_defaults=True):
    status: StatusName | UnsetType = UNSET
    crew_id: Annotated[UUID | None, Meta(description="null unassigns")] | UnsetType = UNSET
    priority: PriorityName | UnsetType = UNSET
    type: WorkOrderTypeName | UnsetType = UNSET
    notes: Notes | UnsetType = UNSET
    due_by: datetime | UnsetType = UNSET
    resolution_code: ResolutionCode | None | UnsetType = UNSET
    time_spent_minutes: Annotated[int, Meta(ge=0, le=100_000)] | None | UnsetType = UNSET


class WorkOrder(Struct, omit_defaults=True):
    id: UUID
    type: WorkOrderTypeName
    priority: PriorityName
    status: StatusName
    source: Literal["operator", "alarm", "citizen"]
    device_ids: list[UUID]
    location: WorkOrderLocation
    notes: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int
    crew_id: UUID | None = None
    alarm_id: UUID | None = None
    due_by: datetime | None = None
    resolution_code: str | None = None
    time_spent_minutes: int | None = None
    closed_at: datetime | None = None
    verified_at: datetime | None = None
    reopened_at: datetime | None = None
    reopened_by_alarm_id: UUID | None = None
    distance_m: Annotated[int, Meta(description="whole metres from `near` (or from the previous stop)")] | None = None


class WorkOrderPage(Struct):
    items: list[WorkOrder]
    next_cursor: str | None


class AlarmRule(Struct, forbid_unknown_fields=True):
    """Open a work order for an alarm of these types, at least this severe, left unacknowledged this long."""

    alarm_types: Annotated[list[AlarmType], Meta(min_length=1, max_length=50)]
    work_order_type: WorkOrderTypeName
    min_severity: SeverityName = "major"
    unacknowledged_minutes: Annotated[int, Meta(ge=0, le=10_080)] = 30
    priority: PriorityName = "high"
    assign: Annotated[AssignName, Meta(description="`nearest_crew`: the work order goes to the crew nearest "
                                                   "to the device; `none` leaves it unassigned")] = "none"


class DueHours(Struct, forbid_unknown_fields=True, frozen=True):
    urgent: Annotated[int, Meta(ge=1, le=8760)] = DEFAULT_DUE_HOURS["urgent"]
    high: Annotated[int, Meta(ge=1, le=8760)] = DEFAULT_DUE_HOURS["high"]
    medium: Annotated[int, Meta(ge=1, le=8760)] = DEFAULT_DUE_HOURS["medium"]
    low: Annotated[int, Meta(ge=1, le=8760)] = DEFAULT_DUE_HOURS["low"]


class WorkOrderRules(Struct, forbid_unknown_fields=True):
    """The city's work-order rules; what is left out keeps its documented default."""

    alarm_rules: Annotated[list[AlarmRule], Meta(max_length=100)] = []
    due_hours: DueHours = DueHours()
    reopen_window_days: Annotated[int, Meta(ge=0, le=365)] = DEFAULT_REOPEN_WINDOW_DAYS
    crew_position_fresh_minutes: Annotated[int, Meta(ge=1, le=10_080, description=(
        "how long a crew's reported position is where it is for nearest-crew assignment; "
        "after that its home base counts"))] = DEFAULT_CREW_POSITION_FRESH_MINUTES


class Attachment(Struct):
    id: UUID
    work_order_id: UUID
    media_type: str
    size_bytes: int
    created_by: str
    created_at: datetime
