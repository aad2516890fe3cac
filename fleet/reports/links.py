"""Where a citizen's report joins a device's alarm and work order: THE LEAD'S INTEGRATION POINT.

Reports call only these two functions. Until the alarms and work-order branches are merged they
are minimal stand-ins with exactly the agreed signatures (COMMON.md, "Interfaces between
helpers"); at merge, point them at `fleet.alarms.service.merge_citizen_report` and
`fleet.workorders.service.for_citizen_report` and delete the bodies below:

    from fleet.alarms.service import merge_citizen_report
    from fleet.workorders.service import for_citizen_report
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from fleet.alarms.models import AlarmType, Severity
from fleet.events.models import ALARM_RAISED, ALARM_UPDATED, WORK_ORDER_CREATED, WORK_ORDER_UPDATED
from fleet.events.service import publish

# Stand-in only: the work-order branch owns priorities and their per-city deadlines.
_PRIORITY = "medium"
_DUE_IN = timedelta(days=3)
_OPEN_WORK_ORDER = ("new", "assigned", "en_route", "in_progress", "reopened")


async def merge_citizen_report(conn: asyncpg.Connection, tenant_id: UUID, device_id: UUID,
                               detail: str, at: datetime) -> UUID:
    """The device's open alarm, counted once more; else a new `citizen_report` alarm."""
    row = await conn.fetchrow(
        """update alarms set count = count + 1, last_seen = greatest(last_seen, $3),
                  updated_at = now(), version = version + 1
           where id = (select id from alarms where tenant_id = $1 and device_id = $2 and status <> 'cleared'
                       order by seq limit 1 for update)
           returning id, type, status, count""", tenant_id, device_id, at)
    kind = ALARM_UPDATED
    if row is None:
        row = await conn.fetchrow(
            """insert into alarms (tenant_id, device_id, type, severity, first_seen, last_seen, detail, source)
               values ($1, $2, $3, $4, $5, $5, $6, 'citizen')
               on conflict (tenant_id, device_id, type) where status <> 'cleared'
               do update set count = alarms.count + 1, last_seen = greatest(alarms.last_seen, excluded.last_seen)
               returning id, type, status, count""",
            tenant_id, device_id, AlarmType.CITIZEN_REPORT.value, Severity.MINOR.value, at, detail)
        kind = ALARM_RAISED
    await publish(conn, tenant_id, kind, "alarm", row["id"], {
        "id": str(row["id"]), "type": row["type"], "status": row["status"], "device_id": str(device_id),
        "count": row["count"]})
    return row["id"]


async def for_citizen_report(conn: asyncpg.Connection, tenant_id: UUID, device_id: UUID, alarm_id: UUID,
                             type: str, notes: str) -> UUID:  # noqa: A002 - the agreed signature
    """The device's open work order, with the report's notes added; else a new one (source 'citizen')."""
    existing = await conn.fetchrow(
        """update work_orders w set notes = left(w.notes || E'\\n' || $3, 10000), updated_at = now(),
                  version = version + 1
           where w.id = (select o.id from work_orders o join work_order_devices d
                           on d.tenant_id = o.tenant_id and d.work_order_id = o.id
                         where o.tenant_id = $1 and d.device_id = $2 and o.status = any($4::text[])
                         order by o.seq limit 1 for update of o)
           returning id, status, version""", tenant_id, device_id, notes, list(_OPEN_WORK_ORDER))
    if existing is not None:
        await publish(conn, tenant_id, WORK_ORDER_UPDATED, "work_order", existing["id"], {
            "id": str(existing["id"]), "status": existing["status"], "version": existing["version"]})
        return existing["id"]
    created = await conn.fetchrow(
        """insert into work_orders (tenant_id, type, priority, source, lat, lon, alarm_id, due_by, notes, created_by)
           select $1, $3, $4, 'citizen', d.lat, d.lon, $5, now() + $6::interval, $7, 'citizen'
           from devices d where d.tenant_id = $1 and d.id = $2
           returning id, status, version""",
        tenant_id, device_id, type, _PRIORITY, alarm_id, _DUE_IN, notes)
    await conn.execute("insert into work_order_devices (tenant_id, work_order_id, device_id) values ($1, $2, $3)",
                       tenant_id, created["id"], device_id)
    await publish(conn, tenant_id, WORK_ORDER_CREATED, "work_order", created["id"], {
        "id": str(created["id"]), "type": type, "status": created["status"], "version": created["version"],
        "device_ids": [str(device_id)]})
    return created["id"]
