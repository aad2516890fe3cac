"""The pure rules of a work order's life: deadlines, allowed transitions, what a change implies."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from msgspec import UNSET

from fleet.errors import Conflict, FieldError, PermissionDenied, PreconditionFailed, PreconditionRequired, ValidationFailed
from fleet.workorders.models import CLOSING, TRANSITIONS, DueHours, Status, WorkOrder, WorkOrderUpdate


def due_by(created_at: datetime, priority: str, due_hours: DueHours, timezone: str) -> datetime:
    """`created_at` plus the priority's hours; a deadline of whole days (24 h or more) runs on to
    the end of that local day, so "3 days" means "by the end of Thursday" to the crew."""
    hours = getattr(due_hours, priority)
    deadline = created_at + timedelta(hours=hours)
    if hours % 24:
        return deadline
    zone = ZoneInfo(timezone)
    local = deadline.astimezone(zone)
    next_midnight = datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=zone)
    return next_midnight.astimezone(created_at.tzinfo)


def parse_if_match(if_match: str | None, current: int) -> None:
    """Refuse a change that names no version (428) or one that is no longer current (412).
    Accepts `3`, `"3"` and `W/"3"`."""
    if if_match is None or not if_match.strip():
        raise PreconditionRequired("send If-Match with the work order's version (its ETag)")
    text = if_match.strip().removeprefix("W/").strip('"')
    if text != "*" and (not text.isdigit() or int(text) != current):
        raise PreconditionFailed(f"the work order is at version {current}; fetch it and apply the change again",
                                 current)


# What a crew may change on its own work orders; priorities, deadlines and who does the work
# stay with the control room.
CREW_FIELDS = frozenset({"status", "notes", "resolution_code", "time_spent_minutes", "crew_id"})


def check_crew_may_change(crew_id: UUID | None, before: WorkOrder, update: WorkOrderUpdate) -> None:
    """A crew works its own work orders and may take an unassigned one; it may not cancel,
    re-prioritise or hand work to another crew. Raises PermissionDenied."""
    if crew_id is None:
        raise PermissionDenied("this crew key belongs to no crew: ask an admin for a key of your crew")
    if before.crew_id not in (None, crew_id):
        raise PermissionDenied("this work order is assigned to another crew")
    fields = {f for f in WorkOrderUpdate.__struct_fields__ if getattr(update, f) is not UNSET}
    if fields - CREW_FIELDS:
        raise PermissionDenied(f"a crew may not change {', '.join(sorted(fields - CREW_FIELDS))}")
    if update.crew_id is not UNSET and update.crew_id != crew_id:
        raise PermissionDenied("a crew may take a work order for itself, not hand it to another crew")
    if update.status == Status.CANCELLED:
        raise PermissionDenied("only the control room cancels a work order")


def changes_for(before: WorkOrder, update: WorkOrderUpdate, now: datetime) -> dict[str, Any]:
    """The columns an update changes, with what the status implies (assignment by setting a crew,
    closed_at); raises Conflict on a transition people may not make."""
    changes: dict[str, Any] = {}
    for field in ("priority", "type", "notes", "due_by", "resolution_code", "time_spent_minutes"):
        value = getattr(update, field)
        if value is not UNSET and value != getattr(before, field):
            changes[field] = value
    crew_id: UUID | None = before.crew_id
    if update.crew_id is not UNSET and update.crew_id != before.crew_id:
        crew_id = changes["crew_id"] = update.crew_id
    status = Status(before.status)
    target = Status(update.status) if update.status is not UNSET else status
    if update.status is UNSET and "crew_id" in changes:
        # Setting a crew assigns a new work order; taking it away hands an assigned one back.
        if status is Status.NEW and crew_id is not None:
            target = Status.ASSIGNED
        elif status is Status.ASSIGNED and crew_id is None:
            target = Status.NEW
    if target is not status:
        if target in (Status.VERIFIED, Status.REOPENED):
            raise Conflict(f"{target.value} is set by the device's own reports, not by hand")
        if target not in TRANSITIONS[status]:
            raise Conflict(f"a work order cannot go from {status.value} to {target.value}")
        changes["status"] = target.value
        if target in CLOSING:
            changes["closed_at"] = now
        elif before.closed_at is not None:
            changes["closed_at"] = None
    if target in (Status.ASSIGNED, Status.EN_ROUTE, Status.IN_PROGRESS) and crew_id is None:
        raise ValidationFailed("invalid work order", [FieldError("crew_id", f"{target.value} needs a crew")])
    return changes
