"""The device proves a repair: cleared after a done work order → verified; the fault again
within the city's reopen window → reopened."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from fleet.alarms.models import AlarmChange
from fleet.workorders.changes import apply_in, system_actor
from fleet.workorders.models import REPAIRS, Status
from fleet.workorders.repository import WorkOrderRepository


async def _done_repairs(conn: asyncpg.Connection, tenant_id: UUID, ids: list[UUID]) -> list:
    repo = WorkOrderRepository(conn)
    orders = [await repo.get(tenant_id, i, for_update=True) for i in ids]
    return [o for o in orders if o is not None and o.status == Status.DONE and o.type in REPAIRS]


async def verify(conn: asyncpg.Connection, change: AlarmChange) -> None:
    ids = await WorkOrderRepository(conn).done_for_alarm(change.tenant_id, change.alarm_id)
    for order in await _done_repairs(conn, change.tenant_id, ids):
        await apply_in(conn, system_actor(change.tenant_id), order,
                       {"status": Status.VERIFIED.value, "verified_at": change.at}, change.at)


async def reopen(conn: asyncpg.Connection, change: AlarmChange) -> None:
    ids = await WorkOrderRepository(conn).done_within_reopen_window(
        change.tenant_id, change.device_id, change.type, change.at)
    for order in await _done_repairs(conn, change.tenant_id, ids):
        await apply_in(conn, system_actor(change.tenant_id), order,
                       {"status": Status.REOPENED.value, "reopened_at": change.at,
                        "reopened_by_alarm_id": change.alarm_id, "closed_at": None}, change.at)
