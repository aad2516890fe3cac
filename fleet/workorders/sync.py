"""Tablets that lost their connection catch up: every change to the crew's work orders, and to
the devices and alarms they refer to, since a position in the event log.

Built on the event log (fleet.events), read in commit order: a change committed late by a
transaction that started early still comes after the token a tablet holds, never before it.
The answer carries current snapshots (not the events), so a tablet just replaces what it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from msgspec import Struct

from fleet.access.models import Permission, Principal
from fleet.collection.driving import routes_for_sync, utc_now
from fleet.collection.models import RouteOut
from fleet.db import Database
from fleet.errors import FieldError, ValidationFailed
from fleet.events.models import Position
from fleet.events.repository import EventRepository
from fleet.registry.models import Device
from fleet.registry.service import require
from fleet.workorders.models import OPEN, WorkOrder
from fleet.workorders.repository import WorkOrderRepository

BATCH = 1000


class AlarmSnapshot(Struct):
    id: UUID
    type: str
    severity: str
    status: str
    device_id: UUID
    count: int
    first_seen: datetime
    last_seen: datetime
    detail: str
    acknowledged_at: datetime | None
    cleared_at: datetime | None
    clear_reason: str | None
    verified_at: datetime | None
    version: int


@dataclass
class SyncBatch:
    next: str
    more: bool = False
    work_orders: list[WorkOrder] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    alarms: list[AlarmSnapshot] = field(default_factory=list)
    # Collection routes under way (the crew's own) with their stops; in changes, each route that
    # changed and is the crew's now or was until the change.
    routes: list[RouteOut] = field(default_factory=list)
    # The token named changes the event log no longer holds (kept for the events' retention) or
    # no position this database gave out: this is a full snapshot, to replace everything held.
    reset: bool = False


def _referenced(orders: list[WorkOrder]) -> tuple[set[UUID], set[UUID]]:
    devices = {d for o in orders for d in o.device_ids}
    alarms = {a for o in orders for a in (o.alarm_id, o.reopened_by_alarm_id) if a is not None}
    return devices, alarms


class SyncService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def since(self, principal: Principal, token: str | None) -> SyncBatch:
        """Without a token: the open work orders (the crew's, for a crew key) and what they refer
        to, with the token to continue from. With one: what changed after it."""
        require(principal, Permission.READ)
        position = None
        if token is not None:
            try:
                position = Position.parse(token)
            except ValueError:
                raise ValidationFailed("invalid sync token", [FieldError("since", "is not a token this API issued")]) from None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            if position is None:
                return await self._snapshot(conn, principal)
            pruned, unknown = await EventRepository(conn).resumable(principal.tenant_id, position)
            if pruned or unknown:
                # Changes after the token are gone: answering with what is left would leave the
                # tablet holding work orders that changed, or closed, unseen.
                batch = await self._snapshot(conn, principal)
                batch.reset = True
                return batch
            return await self._changes(conn, principal, position)

    async def _snapshot(self, conn: asyncpg.Connection, principal: Principal) -> SyncBatch:
        # The horizon first: whatever commits after it comes after the token, whatever
        # committed before it is in the snapshot read next (a change in both is harmless).
        horizon = await EventRepository(conn).horizon()
        repo = WorkOrderRepository(conn)
        statuses = sorted(OPEN)
        orders = (await repo.open_for_crew(principal.tenant_id, principal.crew_id, statuses)
                  if principal.crew_id else await repo.all_open(principal.tenant_id, statuses))
        devices, alarms = _referenced(orders)
        batch = SyncBatch(horizon.token(), False, orders, *await self._related(conn, principal.tenant_id, devices, alarms))
        batch.routes = await routes_for_sync(conn, principal.tenant_id, principal.crew_id, utc_now())
        return batch

    async def _changes(self, conn: asyncpg.Connection, principal: Principal, position: Position) -> SyncBatch:
        events = await EventRepository(conn).after(principal.tenant_id, position, BATCH)
        if not events:
            return SyncBatch(position.token())
        subjects: dict[str, set[UUID]] = {"work_order": set(), "device": set(), "alarm": set(), "route": set()}
        was_ours: set[UUID] = set()
        for event in events:
            if event.subject_type in subjects:
                subject = UUID(event.subject_id)
                subjects[event.subject_type].add(subject)
                if event.subject_type in ("work_order", "route") and str(principal.crew_id) in (
                        _crew_of(event.payload), _crew_of(event.payload, "previous_crew_id")):
                    was_ours.add(subject)
        repo = WorkOrderRepository(conn)
        changed = await repo.get_many(principal.tenant_id, sorted(subjects["work_order"]))
        if principal.crew_id:
            # Ours now, or ours before or during these changes (reassigned away: the tablet
            # learns to drop it).
            others = [o.id for o in changed if o.crew_id != principal.crew_id and o.id not in was_ours]
            if others:
                before = await repo.last_payloads_before(principal.tenant_id, others, position.xid, position.id)
                was_ours |= {UUID(p["id"]) for p in before if _crew_of(p) == str(principal.crew_id)}
            changed = [o for o in changed if o.crew_id == principal.crew_id or o.id in was_ours]
        devices, alarms = await repo.referenced(principal.tenant_id, principal.crew_id,
                                                subjects["device"], subjects["alarm"])
        changed_devices, changed_alarms = _referenced(changed)
        related = await self._related(conn, principal.tenant_id, devices | (changed_devices & subjects["device"]),
                                      alarms | (changed_alarms & subjects["alarm"]))
        batch = SyncBatch(events[-1].position.token(), len(events) == BATCH, changed, *related)
        routes = await routes_for_sync(conn, principal.tenant_id, principal.crew_id, utc_now(),
                                       sorted(subjects["route"]))
        batch.routes = [r for r in routes if not principal.crew_id or r.crew_id == principal.crew_id
                        or r.id in was_ours]
        return batch

    @staticmethod
    async def _related(conn: asyncpg.Connection, tenant_id: UUID, device_ids: set[UUID],
                       alarm_ids: set[UUID]) -> tuple[list[Device], list[AlarmSnapshot]]:
        repo = WorkOrderRepository(conn)
        devices = await repo.device_snapshots(tenant_id, sorted(device_ids)) if device_ids else []
        alarms = [AlarmSnapshot(**row) for row in await repo.alarm_snapshots(tenant_id, sorted(alarm_ids))] \
            if alarm_ids else []
        return devices, alarms


def _crew_of(payload: dict[str, Any], key: str = "crew_id") -> str | None:
    crew = payload.get(key) if isinstance(payload, dict) else None
    return str(crew) if crew is not None else None
