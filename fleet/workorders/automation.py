"""Work orders Fleet opens by itself: for alarms a city's rule names, left unacknowledged too long.

Any number of nodes may run a pass at once: the unique guard on (city, alarm) decides, so an
alarm never gets two work orders (nor two crews: the assignment is made with the work order).
The scheduler leader runs it (fleet.scheduling.workorders).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from fleet.db import Database
from fleet.workorders.changes import create_in, system_actor
from fleet.workorders.repository import WorkOrderRepository

log = structlog.get_logger(__name__)

BATCH = 500


def _notes(due) -> str:
    """What the crew reads first: the fault and since when, on the city's clock."""
    since = due["first_seen"].astimezone(ZoneInfo(due["timezone"]))
    return f"{due['type'].replace('_', ' ')} ({due['severity']}) since {since:%Y-%m-%d %H:%M %Z}"


async def open_for_alarms(db: Database, now: datetime | None = None, *,
                          fence: Callable[[asyncpg.Connection], Awaitable[None]] | None = None) -> int:
    """One pass over every city; returns how many work orders it opened."""
    now = now or datetime.now(UTC)
    created = 0
    async with db.system_tx() as conn:
        if fence is not None:
            await fence(conn)
        going: set[tuple] = set()  # (city, device, type) opened in this pass: one crew goes
        for due in await WorkOrderRepository(conn).alarms_due_for_work_orders(now, BATCH):
            trip = (due["tenant_id"], due["device_id"], due["work_order_type"])
            if trip in going:
                continue
            going.add(trip)
            order = await create_in(
                conn, system_actor(due["tenant_id"]), type=due["work_order_type"], priority=due["priority"],
                device_ids=[due["device_id"]], source="alarm", alarm_id=due["alarm_id"],
                notes=_notes(due),
                assign=due["assign"], now=now)
            created += order is not None
    if created:
        log.info("work orders opened for alarms", count=created)
    return created
