"""Writing work orders inside a caller's transaction: every creation path and every change goes
through here, so each is audited, published as an event, and keeps its devices' status right."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from fleet.access.models import Principal, Role
from fleet.alarms.service import clear_for_work_order
from fleet.audit.service import record
from fleet.errors import FieldError, NotFound, ValidationFailed
from fleet.events.models import DEVICE_STATUS_CHANGED, WORK_ORDER_CREATED, WORK_ORDER_UPDATED
from fleet.events.service import publish
from fleet.workorders.assignment import nearest_crew
from fleet.workorders.lifecycle import due_by
from fleet.workorders.models import CLOSING, REPAIRS, AssignName, Status, WorkOrder
from fleet.workorders.repository import WorkOrderRepository


def system_actor(tenant_id: UUID) -> Principal:
    """Who acts when Fleet itself opens or proves a work order (audited as `system`)."""
    return Principal(tenant_id, "", "", Role.ADMIN, None)


def rendered(order: WorkOrder) -> dict[str, Any]:
    return msgspec.to_builtins(order)


async def create_in(conn: asyncpg.Connection, principal: Principal, *, type: str, priority: str,
                    device_ids: Sequence[UUID], notes: str = "", source: str = "operator",
                    location: tuple[float, float] | None = None, crew_id: UUID | None = None,
                    alarm_id: UUID | None = None, due: datetime | None = None,
                    assign: AssignName = "none", now: datetime) -> WorkOrder | None:
    """A new work order; None if `alarm_id` already has one (the unique guard decided).
    `assign="nearest_crew"` without a `crew_id` gives it to the crew nearest to its location."""
    tenant_id = principal.tenant_id
    repo = WorkOrderRepository(conn)
    device_ids = list(dict.fromkeys(device_ids))
    devices = await repo.devices(tenant_id, device_ids)
    if len(devices) != len(device_ids):
        known = {d["id"] for d in devices}
        raise ValidationFailed("invalid work order", [FieldError(
            "device_ids", f"no such device in this city: {', '.join(str(d) for d in device_ids if d not in known)}")])
    if location is None:
        if not devices:
            raise ValidationFailed("invalid work order", [FieldError("location", "give devices or a location")])
        location = (sum(d["lat"] for d in devices) / len(devices), sum(d["lon"] for d in devices) / len(devices))
    if crew_id is not None and not await repo.crew_exists(tenant_id, crew_id):
        raise ValidationFailed("invalid work order", [FieldError("crew_id", "no such crew in this city")])
    if due is None or (assign == "nearest_crew" and crew_id is None):
        rules, _ = await repo.rules(tenant_id)
        if due is None:
            due = due_by(now, priority, rules.due_hours, await repo.city_timezone(tenant_id))
        if assign == "nearest_crew" and crew_id is None:
            crew_id = await nearest_crew(repo, tenant_id, location, rules, now)
    work_order_id = await repo.insert(
        tenant_id, type=type, priority=priority, status=Status.ASSIGNED if crew_id else Status.NEW,
        source=source, lat=location[0], lon=location[1], crew_id=crew_id, alarm_id=alarm_id, due_by=due,
        notes=notes, created_by=principal.actor, device_ids=device_ids, created_at=now)
    if work_order_id is None:
        return None
    order = await repo.get(tenant_id, work_order_id)
    await record(conn, principal, "work_order.create", "work_order", order.id, None, rendered(order))
    await publish(conn, tenant_id, WORK_ORDER_CREATED, "work_order", order.id, rendered(order))
    return order


async def apply_in(conn: asyncpg.Connection, principal: Principal, before: WorkOrder,
                   changes: dict[str, Any], now: datetime) -> WorkOrder:
    """Write `changes` (already checked against the lifecycle), then what the new status implies:
    devices into maintenance when work starts and back when it closes, alarms cleared on done."""
    if not changes:
        return before
    tenant_id = principal.tenant_id
    repo = WorkOrderRepository(conn)
    if changes.get("crew_id") is not None and not await repo.crew_exists(tenant_id, changes["crew_id"]):
        raise ValidationFailed("invalid work order", [FieldError("crew_id", "no such crew in this city")])
    await repo.update(tenant_id, before.id, changes)
    status = changes.get("status")
    device_statuses: list[tuple[UUID, str, str]] = []  # (device, status, previous)
    proven = False
    if status == Status.IN_PROGRESS:
        device_statuses = [(d, "maintenance", previous)
                           for d, previous in await repo.start_maintenance(tenant_id, before.id)]
    elif status in CLOSING:
        device_statuses = [(d, status, "maintenance") for d, status in await repo.end_maintenance(tenant_id, before.id)]
        if status == Status.DONE:
            alarms = [a for a in (before.alarm_id, before.reopened_by_alarm_id) if a is not None]
            if alarms:
                proven = bool(await clear_for_work_order(conn, tenant_id, alarms, principal.actor, now))
    for device_id, device_status, previous in device_statuses:
        # The same payload as every other device.status_changed, plus the work order behind it.
        await publish(conn, tenant_id, DEVICE_STATUS_CHANGED, "device", device_id,
                      {"device_id": str(device_id), "status": device_status, "previous": previous,
                       "work_order_id": str(before.id)})
    after = await repo.get(tenant_id, before.id)
    if after is None:
        raise NotFound(f"work order {before.id} not found")
    await record(conn, principal, "work_order.update", "work_order", after.id, rendered(before), rendered(after))
    await publish(conn, tenant_id, WORK_ORDER_UPDATED, "work_order", after.id, rendered(after))
    if proven and after.type in REPAIRS:
        # The device already reported the condition gone (before the crew closed): that is the proof.
        after = await apply_in(conn, system_actor(tenant_id), after,
                               {"status": Status.VERIFIED.value, "verified_at": now}, now)
    return after
