"""TEMPORARY stand-in for `fleet.alarms.service.clear_for_work_order` (alarms-core's branch).

Same signature and meaning; the lead replaces the import in fleet.workorders.service with the
real one at merge and deletes this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from fleet.events.models import ALARM_CLEARED
from fleet.events.service import publish


async def clear_for_work_order(conn: asyncpg.Connection, tenant_id: UUID, alarm_ids: Sequence[UUID],
                               by: str, at: datetime) -> None:
    """Clear the open alarms a work order closed as done (clear_reason 'work_order'); the
    device's next report of the condition absent proves it (verified_at)."""
    rows = await conn.fetch(
        """update alarms set status = 'cleared', cleared_at = $3, cleared_by = $4, clear_reason = 'work_order',
                             clearing_since = null, version = version + 1, updated_at = now()
           where tenant_id = $1 and id = any($2::uuid[]) and status <> 'cleared'
           returning id, type, severity, status, device_id, count, first_seen, last_seen, cleared_at,
                     clear_reason, version""",
        tenant_id, list(alarm_ids), at, by)
    for row in rows:
        await publish(conn, tenant_id, ALARM_CLEARED, "alarm", row["id"], dict(row))
