"""Work order use cases: create, read, change under If-Match, list near a point or for a crew,
a crew's day in driving order, the city's rules and photos; plus the hooks alarms call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import msgspec

from fleet import cursors
from fleet.access.models import Permission, Principal, Role
from fleet.alarms.models import AlarmChange, ChangeKind
from fleet.audit.service import record
from fleet.db import Database
from fleet.errors import (Conflict, FieldError, NotFound, PayloadTooLarge, PermissionDenied, UnsupportedMediaType,
                          ValidationFailed)
from fleet.registry.service import MAX_PAGE, require
from fleet.workorders import proof
from fleet.workorders.assignment import for_citizen_reports
from fleet.workorders.attachments import MAX_ATTACHMENT_BYTES, image_type
from fleet.workorders.changes import apply_in, create_in, system_actor
from fleet.workorders.lifecycle import changes_for, check_crew_may_change, parse_if_match
from fleet.workorders.models import (CREW_OPEN, MAX_NOTES, OPEN, Attachment, Status, WorkOrder, WorkOrderCreate,
                                     WorkOrderPage, WorkOrderRules, WorkOrderUpdate)
from fleet.workorders.repository import WorkOrderRepository
from fleet.workorders.routing import driving_order, haversine_m

OPEN_STATUSES = sorted(OPEN)


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_point(field: str, text: str) -> tuple[float, float]:
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError
    except ValueError:
        raise ValidationFailed(f"invalid {field}", [FieldError(field, "expected lat,lon in degrees")]) from None
    return lat, lon


def _encode_cursor(distance: float, seq: int) -> str:
    return cursors.encode(b"w:", [distance, seq])


def _decode_cursor(cursor: str) -> tuple[float, int]:
    return cursors.decode(b"w:", cursor, tuple[float, int])


class WorkOrderService:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.db = db
        self.clock = clock

    async def create(self, principal: Principal, data: WorkOrderCreate) -> WorkOrder:
        require(principal, Permission.MANAGE_WORK_ORDERS)
        if data.crew_id is not None and data.assign != "none":
            raise ValidationFailed("invalid work order", [FieldError(
                "assign", "give a crew_id or ask for the nearest crew, not both")])
        location = (data.location.lat, data.location.lon) if data.location else None
        device_ids = list(data.device_ids)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            if data.alarm_id is not None:
                alarm = await WorkOrderRepository(conn).alarm_to_answer(principal.tenant_id, data.alarm_id)
                if alarm is None:
                    raise ValidationFailed("invalid work order", [FieldError("alarm_id", "no such alarm in this city")])
                if alarm["work_order_id"] is not None:
                    raise Conflict(f"alarm {data.alarm_id} already has work order {alarm['work_order_id']}")
                device_ids.append(alarm["device_id"])
            order = await create_in(conn, principal, type=data.type, priority=data.priority,
                                    device_ids=device_ids, notes=data.notes, location=location,
                                    crew_id=data.crew_id, alarm_id=data.alarm_id, due=data.due_by,
                                    assign=data.assign, now=self.clock())
        if order is None:  # the city's rule opened one for the alarm meanwhile
            raise Conflict(f"alarm {data.alarm_id} already has a work order")
        return order

    async def get(self, principal: Principal, work_order_id: UUID) -> WorkOrder:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            order = await WorkOrderRepository(conn).get(principal.tenant_id, work_order_id)
        if order is None:
            raise NotFound(f"work order {work_order_id} not found")
        return order

    async def update(self, principal: Principal, work_order_id: UUID, data: WorkOrderUpdate,
                     if_match: str | None) -> WorkOrder:
        """Change under optimistic concurrency: `if_match` must name the current version."""
        require(principal, Permission.MANAGE_WORK_ORDERS)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            before = await WorkOrderRepository(conn).get(principal.tenant_id, work_order_id, for_update=True)
            if before is None:
                raise NotFound(f"work order {work_order_id} not found")
            parse_if_match(if_match, before.version)
            if principal.role is Role.CREW:
                check_crew_may_change(principal.crew_id, before, data)
            now = self.clock()
            return await apply_in(conn, principal, before, changes_for(before, data, now), now)

    async def list(self, principal: Principal, *, statuses: Sequence[str] = (), crew_id: UUID | None = None,
                   device_id: UUID | None = None, near: str | None = None, assigned_to: str | None = None,
                   cursor: str | None = None, limit: int = 100) -> WorkOrderPage:
        require(principal, Permission.READ)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed("invalid limit", [FieldError("limit", f"must be 1-{MAX_PAGE}")])
        if assigned_to is not None:
            crew_id = self._my_crew(principal, "assigned_to")
        point = parse_point("near", near) if near else None
        after = _decode_cursor(cursor) if cursor else None
        wanted = cursors.choices("status", statuses, set(Status))
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            items, more = await WorkOrderRepository(conn).page(
                principal.tenant_id, statuses=wanted, crew_id=crew_id, device_id=device_id,
                near=point, after=after, limit=limit)
        next_cursor = _encode_cursor(items[-1][1], items[-1][2]) if more else None
        return WorkOrderPage([order for order, _, _ in items], next_cursor)

    async def my_day(self, principal: Principal, start: str | None = None,
                     crew_id: UUID | None = None) -> list[WorkOrder]:
        """The crew's open work orders in a short driving order from `start`; each carries the
        metres of its leg (from `start`, or from the previous stop)."""
        require(principal, Permission.READ)
        if principal.crew_id is not None or crew_id is None:
            crew_id = self._my_crew(principal, "crew")
        origin = parse_point("start", start) if start else None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            orders = await WorkOrderRepository(conn).open_for_crew(principal.tenant_id, crew_id, sorted(CREW_OPEN))
        stops = [(o.location.lat, o.location.lon) for o in orders]
        day, previous = [], origin
        for index in driving_order(origin, stops):
            leg = round(haversine_m(previous, stops[index])) if previous is not None else 0
            day.append(msgspec.structs.replace(orders[index], distance_m=leg))
            previous = stops[index]
        return day

    @staticmethod
    def _my_crew(principal: Principal, field: str) -> UUID:
        if principal.crew_id is None:
            raise ValidationFailed("this API key belongs to no crew", [FieldError(
                field, "only a crew key (fleet apikey create --role crew --crew NAME) has a crew")])
        return principal.crew_id

    # The city's rules

    async def rules(self, principal: Principal) -> WorkOrderRules:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            rules, _ = await WorkOrderRepository(conn).rules(principal.tenant_id)
        return rules

    async def put_rules(self, principal: Principal, rules: WorkOrderRules) -> WorkOrderRules:
        require(principal, Permission.PLAN_WORK)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = WorkOrderRepository(conn)
            before, _ = await repo.rules(principal.tenant_id)
            await repo.put_rules(principal.tenant_id, rules)
            await record(conn, principal, "work_order_rules.update", "work_order_rules", principal.tenant_id,
                         msgspec.to_builtins(before), msgspec.to_builtins(rules))
        return rules

    # Photos

    async def add_attachment(self, principal: Principal, work_order_id: UUID, content: bytes) -> Attachment:
        require(principal, Permission.MANAGE_WORK_ORDERS)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = WorkOrderRepository(conn)
            order = await repo.get(principal.tenant_id, work_order_id, for_update=True)
            if order is None:
                raise NotFound(f"work order {work_order_id} not found")
            if principal.role is Role.CREW and order.crew_id != principal.crew_id:
                raise PermissionDenied("a crew adds photos to its own work orders")
            if len(content) > MAX_ATTACHMENT_BYTES:
                raise PayloadTooLarge(f"an attachment may be at most {MAX_ATTACHMENT_BYTES} bytes")
            media_type = image_type(content)
            if media_type is None:
                raise UnsupportedMediaType("attachments are JPEG, PNG or WebP images")
            attachment = await repo.add_attachment(principal.tenant_id, work_order_id, media_type, content,
                                                   principal.actor)
            await record(conn, principal, "work_order.attachment.add", "work_order", work_order_id,
                         None, msgspec.to_builtins(attachment))
        return attachment

    async def attachments(self, principal: Principal, work_order_id: UUID) -> list[Attachment]:
        await self.get(principal, work_order_id)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await WorkOrderRepository(conn).attachments(principal.tenant_id, work_order_id)

    async def attachment(self, principal: Principal, work_order_id: UUID, attachment_id: UUID) -> tuple[str, bytes]:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            found = await WorkOrderRepository(conn).attachment_content(principal.tenant_id, work_order_id,
                                                                       attachment_id)
        if found is None:
            raise NotFound(f"attachment {attachment_id} not found")
        return found


# Hooks other capabilities call inside their own transactions


async def for_citizen_report(conn: asyncpg.Connection, tenant_id: UUID, device_id: UUID, alarm_id: UUID,
                             type: str, notes: str) -> UUID:
    """The device's open work order if it has one (a second report makes no second trip), else a
    new one from the citizen's report, linked to its alarm; it goes to the nearest crew when a
    city's rule for `citizen_report` alarms asks for that."""
    repo = WorkOrderRepository(conn)
    actor, now = system_actor(tenant_id), utc_now()
    existing = await repo.open_for_device(tenant_id, device_id, OPEN_STATUSES)
    if existing is not None:
        # The crew reads every citizen's words on the one work order.
        before = await repo.get(tenant_id, existing, for_update=True)
        assert before is not None
        joined = f"{before.notes}\n{notes}" if before.notes else notes
        await apply_in(conn, actor, before, {"notes": joined[:MAX_NOTES]}, now)
        return existing
    assign = for_citizen_reports((await repo.rules(tenant_id))[0])
    order = await create_in(conn, actor, type=type, priority="medium", device_ids=[device_id], notes=notes,
                            source="citizen", alarm_id=alarm_id, assign=assign, now=now)
    if order is None:
        # The alarm's own work order was closed without fixing it: a fresh one, unlinked.
        order = await create_in(conn, actor, type=type, priority="medium", device_ids=[device_id],
                                notes=notes, source="citizen", assign=assign, now=now)
    assert order is not None
    return order.id


async def alarms_changed(conn: asyncpg.Connection, changes: list[AlarmChange]) -> None:
    """What the devices' own reports say about repairs: a cleared condition proves a done repair
    (verified); the fault again within the city's reopen window reopens it."""
    for change in changes:
        if change.kind is ChangeKind.PROVEN_CLEAR:
            await proof.verify(conn, change)
    # Raised alarms come by the thousand at dusk or in a power cut: one statement finds the few
    # that meet a done repair, instead of one per alarm inside the ingest's transaction.
    raised = [c for c in changes if c.kind is ChangeKind.RAISED]
    if raised:
        for n in await WorkOrderRepository(conn).reopenable(
                [(c.tenant_id, c.device_id, c.type, c.at) for c in raised]):
            await proof.reopen(conn, raised[n])


__all__ = ["WorkOrderService", "alarms_changed", "for_citizen_report"]
