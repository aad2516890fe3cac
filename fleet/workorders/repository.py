"""SQL for work orders, their devices, the city's rules and the attachments."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from fleet.registry.models import Device
from fleet.registry.repository import device_from_row, great_circle_m
from fleet.workorders.models import DEFAULT_REOPEN_WINDOW_DAYS, OPEN, Attachment, WorkOrderLocation, WorkOrder, WorkOrderRules

_SELECT = """select w.*, array(select d.device_id from work_order_devices d
                               where d.tenant_id = w.tenant_id and d.work_order_id = w.id
                               order by d.device_id) as device_ids
             from work_orders w"""


_UPDATABLE = ("status", "crew_id", "priority", "type", "notes", "due_by", "resolution_code",
              "time_spent_minutes", "closed_at", "verified_at", "reopened_at", "reopened_by_alarm_id")


def work_order(row: asyncpg.Record, distance: float | None = None) -> WorkOrder:
    return WorkOrder(
        row["id"], row["type"], row["priority"], row["status"], row["source"], list(row["device_ids"]),
        WorkOrderLocation(row["lat"], row["lon"]), row["notes"], row["created_by"], row["created_at"],
        row["updated_at"], row["version"], row["crew_id"], row["alarm_id"], row["due_by"],
        row["resolution_code"], row["time_spent_minutes"], row["closed_at"], row["verified_at"],
        row["reopened_at"], row["reopened_by_alarm_id"],
        None if distance is None else round(distance))


class WorkOrderRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def devices(self, tenant_id: UUID, device_ids: Sequence[UUID]) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            "select id, lat, lon, status, kind from devices where tenant_id = $1 and id = any($2::uuid[])",
            tenant_id, list(device_ids))

    async def crew_exists(self, tenant_id: UUID, crew_id: UUID) -> bool:
        return await self.conn.fetchval(
            "select exists (select 1 from crews where tenant_id = $1 and id = $2)", tenant_id, crew_id)

    async def nearest_crew(self, tenant_id: UUID, lat: float, lon: float, fresh_since: datetime,
                           open_statuses: Sequence[str]) -> UUID | None:
        """The crew nearest to (lat, lon): at the position its tablet reported since `fresh_since`,
        else at its home base; crews with neither are not considered. Equal whole metres go to
        the crew with fewer open work orders, then by name."""
        return await self.conn.fetchval(
            f"""select c.id from (
                    select id, name,
                           case when position_at >= $4 then position_lat else home_lat end as lat,
                           case when position_at >= $4 then position_lon else home_lon end as lon
                    from crews where tenant_id = $1) c
                where c.lat is not null
                order by round({great_circle_m("$2::float8", "$3::float8", "c.lat", "c.lon")}),
                         (select count(*) from work_orders w
                          where w.tenant_id = $1 and w.crew_id = c.id and w.status = any($5::text[])),
                         c.name, c.id
                limit 1""",
            tenant_id, lat, lon, fresh_since, list(open_statuses))

    async def alarm_to_answer(self, tenant_id: UUID, alarm_id: UUID) -> asyncpg.Record | None:
        """The alarm's device, and the work order that already answers it (if any)."""
        return await self.conn.fetchrow(
            """select a.device_id, (select w.id from work_orders w where w.tenant_id = a.tenant_id
                                      and (w.alarm_id = a.id or w.reopened_by_alarm_id = a.id)
                                    order by w.seq limit 1) as work_order_id
               from alarms a where a.tenant_id = $1 and a.id = $2""", tenant_id, alarm_id)

    async def city_timezone(self, tenant_id: UUID) -> str:
        return await self.conn.fetchval("select timezone from tenants where id = $1", tenant_id)

    async def insert(self, tenant_id: UUID, *, type: str, priority: str, status: str, source: str,
                     lat: float, lon: float, crew_id: UUID | None, alarm_id: UUID | None,
                     due_by: datetime | None, notes: str, created_by: str,
                     device_ids: Sequence[UUID], created_at: datetime) -> UUID | None:
        """None when the alarm already has its work order (another node, or a retry, was first)."""
        work_order_id = await self.conn.fetchval(
            """insert into work_orders (tenant_id, type, priority, status, source, lat, lon, crew_id, alarm_id,
                                        due_by, notes, created_by, created_at, updated_at)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
               on conflict (tenant_id, alarm_id) where alarm_id is not null do nothing
               returning id""",
            tenant_id, type, priority, status, source, lat, lon, crew_id, alarm_id, due_by, notes, created_by,
            created_at)
        if work_order_id is not None and device_ids:
            await self.conn.execute(
                """insert into work_order_devices (tenant_id, work_order_id, device_id)
                   select $1, $2, unnest($3::uuid[])""", tenant_id, work_order_id, list(device_ids))
        return work_order_id

    async def get(self, tenant_id: UUID, work_order_id: UUID, *, for_update: bool = False) -> WorkOrder | None:
        row = await self.conn.fetchrow(
            f"{_SELECT} where w.tenant_id = $1 and w.id = $2{' for update of w' if for_update else ''}",
            tenant_id, work_order_id)
        return work_order(row) if row else None

    async def get_many(self, tenant_id: UUID, ids: Sequence[UUID]) -> list[WorkOrder]:
        rows = await self.conn.fetch(f"{_SELECT} where w.tenant_id = $1 and w.id = any($2::uuid[]) order by w.seq",
                                     tenant_id, list(ids))
        return [work_order(r) for r in rows]

    async def update(self, tenant_id: UUID, work_order_id: UUID, changes: dict[str, Any]) -> None:
        """Every change bumps the version the tablets send back in If-Match."""
        columns = [c for c in _UPDATABLE if c in changes]
        assignments = "".join(f", {c} = ${i}" for i, c in enumerate(columns, start=3))
        await self.conn.execute(
            f"""update work_orders set version = version + 1, updated_at = now(){assignments}
                where tenant_id = $1 and id = $2""",
            tenant_id, work_order_id, *(changes[c] for c in columns))

    async def page(self, tenant_id: UUID, *, statuses: list[str] | None, crew_id: UUID | None,
                   device_id: UUID | None, near: tuple[float, float] | None,
                   after: tuple[float, int] | None, limit: int) -> tuple[list[tuple[WorkOrder, float, int]], bool]:
        """A page in (distance, seq) order when `near` is given, else in seq order; each with its sort key."""
        distance = ("case when $5::float8 is null then 0::float8 else "
                    + great_circle_m("$5::float8", "$6::float8", "w.lat", "w.lon") + " end")
        rows = await self.conn.fetch(
            f"""select * from (
                    select w.*, array(select d.device_id from work_order_devices d
                                      where d.tenant_id = w.tenant_id and d.work_order_id = w.id
                                      order by d.device_id) as device_ids,
                           {distance} as sort_distance
                    from work_orders w
                    where w.tenant_id = $1
                      and ($2::text[] is null or w.status = any($2::text[]))
                      and ($3::uuid is null or w.crew_id = $3)
                      and ($4::uuid is null or exists (
                          select 1 from work_order_devices d
                          where d.tenant_id = $1 and d.work_order_id = w.id and d.device_id = $4))
                ) w
                where ($7::float8 is null or (w.sort_distance, w.seq) > ($7::float8, $8::bigint))
                order by w.sort_distance, w.seq
                limit $9""",
            tenant_id, statuses, crew_id, device_id, near[0] if near else None, near[1] if near else None,
            after[0] if after else None, after[1] if after else None, limit + 1)
        items = [(work_order(r, r["sort_distance"] if near else None), r["sort_distance"], r["seq"])
                 for r in rows[:limit]]
        return items, len(rows) > limit

    async def open_for_crew(self, tenant_id: UUID, crew_id: UUID, open_statuses: Sequence[str]) -> list[WorkOrder]:
        rows = await self.conn.fetch(
            f"{_SELECT} where w.tenant_id = $1 and w.crew_id = $2 and w.status = any($3::text[]) order by w.seq",
            tenant_id, crew_id, list(open_statuses))
        return [work_order(r) for r in rows]

    async def all_open(self, tenant_id: UUID, open_statuses: Sequence[str]) -> list[WorkOrder]:
        rows = await self.conn.fetch(
            f"{_SELECT} where w.tenant_id = $1 and w.status = any($2::text[]) order by w.seq",
            tenant_id, list(open_statuses))
        return [work_order(r) for r in rows]

    async def open_for_device(self, tenant_id: UUID, device_id: UUID, open_statuses: Sequence[str]) -> UUID | None:
        return await self.conn.fetchval(
            """select w.id from work_orders w join work_order_devices d
                 on d.tenant_id = w.tenant_id and d.work_order_id = w.id
               where w.tenant_id = $1 and d.device_id = $2 and w.status = any($3::text[])
               order by w.seq limit 1""",
            tenant_id, device_id, list(open_statuses))

    # Alarms the city's rules turn into work orders

    async def alarms_due_for_work_orders(self, now: datetime, limit: int) -> list[asyncpg.Record]:
        """Across cities: active (not acknowledged, not shelved) alarms a rule names, older than
        its delay, without a work order yet; the first matching rule decides type, priority and
        who it is assigned to. Left out: an alarm whose condition the device already reports gone
        (clearing under hysteresis), and one whose device already has an open work order of the
        rule's type (a failed lamp is also dark at night: one crew goes, not two)."""
        return await self.conn.fetch(
            """select distinct on (a.seq) a.tenant_id, a.id as alarm_id, a.device_id, a.type, a.severity,
                      a.first_seen, r.work_order_type, r.priority, coalesce(r.assign, 'none') as assign,
                      (select t.timezone from tenants t where t.id = s.tenant_id) as timezone
               from work_order_rules s
               cross join lateral rows from (jsonb_to_recordset(s.alarm_rules)
                   as (alarm_types jsonb, min_severity text, unacknowledged_minutes integer,
                       work_order_type text, priority text, assign text)) with ordinality
                   as r(alarm_types, min_severity, unacknowledged_minutes, work_order_type, priority, assign,
                        rule_index)
               join alarms a on a.tenant_id = s.tenant_id and a.status = 'active' and a.clearing_since is null
                 and r.alarm_types ? a.type
                 and array_position(array['warning', 'minor', 'major', 'critical'], a.severity)
                     >= array_position(array['warning', 'minor', 'major', 'critical'], r.min_severity)
                 and a.first_seen <= $1::timestamptz - make_interval(mins => r.unacknowledged_minutes)
               where not exists (select 1 from work_orders w where w.tenant_id = a.tenant_id
                                   and (w.alarm_id = a.id or w.reopened_by_alarm_id = a.id))
                 and not exists (select 1 from work_orders w join work_order_devices d
                                   on d.tenant_id = w.tenant_id and d.work_order_id = w.id
                                 where w.tenant_id = a.tenant_id and d.device_id = a.device_id
                                   and w.type = r.work_order_type and w.status = any($3::text[]))
                 and not exists (select 1 from alarm_shelves h where h.tenant_id = a.tenant_id and h.until > $1::timestamptz
                                   and (h.alarm_id = a.id or h.device_id = a.device_id))
               order by a.seq, r.rule_index
               limit $2""", now, limit, [status.value for status in OPEN])

    # What a tablet syncs

    async def referenced(self, tenant_id: UUID, crew_id: UUID | None, device_ids: set[UUID],
                         alarm_ids: set[UUID]) -> tuple[set[UUID], set[UUID]]:
        """Which of these devices and alarms a work order (of the crew, if given) refers to."""
        devices = await self.conn.fetch(
            """select distinct d.device_id from work_order_devices d
               join work_orders w on w.tenant_id = d.tenant_id and w.id = d.work_order_id
               where d.tenant_id = $1 and d.device_id = any($2::uuid[]) and ($3::uuid is null or w.crew_id = $3)""",
            tenant_id, list(device_ids), crew_id) if device_ids else []
        alarms = await self.conn.fetch(
            """select distinct a.id from work_orders w, unnest(array[w.alarm_id, w.reopened_by_alarm_id]) a(id)
               where w.tenant_id = $1 and a.id = any($2::uuid[]) and ($3::uuid is null or w.crew_id = $3)""",
            tenant_id, list(alarm_ids), crew_id) if alarm_ids else []
        return {r["device_id"] for r in devices}, {r["id"] for r in alarms}

    async def last_payloads_before(self, tenant_id: UUID, work_order_ids: Sequence[UUID], xid: int,
                                   event_id: int) -> list[dict[str, Any]]:
        """Each work order's last published state at or before a log position."""
        rows = await self.conn.fetch(
            """select distinct on (subject_id) payload from events
               where tenant_id = $1 and subject_type = 'work_order' and subject_id = any($2::text[])
                 and (xid, id) <= ($3::text::xid8, $4)
               order by subject_id, xid desc, id desc""",
            tenant_id, [str(i) for i in work_order_ids], str(xid), event_id)
        return [json.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"] for r in rows]

    async def device_snapshots(self, tenant_id: UUID, device_ids: Sequence[UUID]) -> list[Device]:
        rows = await self.conn.fetch("select * from devices where tenant_id = $1 and id = any($2::uuid[]) order by seq",
                                     tenant_id, list(device_ids))
        return [device_from_row(r) for r in rows]

    async def alarm_snapshots(self, tenant_id: UUID, alarm_ids: Sequence[UUID]) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select id, type, severity, status, device_id, count, first_seen, last_seen, detail, acknowledged_at,
                      cleared_at, clear_reason, verified_at, version
               from alarms where tenant_id = $1 and id = any($2::uuid[]) order by seq""", tenant_id, list(alarm_ids))

    # What the devices' reports prove

    async def done_for_alarm(self, tenant_id: UUID, alarm_id: UUID) -> list[UUID]:
        """Done work orders that cleared this alarm (their own, or the one that reopened them)."""
        return [r["id"] for r in await self.conn.fetch(
            """select id from work_orders where tenant_id = $1 and status = 'done'
                 and (alarm_id = $2 or reopened_by_alarm_id = $2) order by seq""", tenant_id, alarm_id)]

    async def done_within_reopen_window(self, tenant_id: UUID, device_id: UUID, alarm_type: str,
                                        at: datetime) -> list[UUID]:
        """Done, unproven work orders on this device for an alarm of this type, closed within the
        city's reopen window before `at`."""
        return [r["id"] for r in await self.conn.fetch(
            """select w.id from work_orders w
               join alarms a on a.tenant_id = w.tenant_id and a.id = coalesce(w.reopened_by_alarm_id, w.alarm_id)
               left join work_order_rules r on r.tenant_id = w.tenant_id
               where w.tenant_id = $1 and w.status = 'done' and w.verified_at is null
                 and a.device_id = $2 and a.type = $3
                 and w.closed_at >= $4::timestamptz - make_interval(days => coalesce(r.reopen_window_days, $5))
               order by w.seq""",
            tenant_id, device_id, alarm_type, at, DEFAULT_REOPEN_WINDOW_DAYS)]

    async def reopenable(self, raised: Sequence[tuple[UUID, UUID, str, datetime]]) -> list[int]:
        """Which of these (city, device, alarm type, raised at) may reopen a done repair, by
        position: one statement for a whole batch of raised alarms, where most have none."""
        tenants, devices, types, ats = zip(*raised, strict=True)
        rows = await self.conn.fetch(
            """select distinct k.n - 1 as n
               from unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])
                    with ordinality as k(tenant_id, device_id, type, at, n)
               join work_orders w on w.tenant_id = k.tenant_id and w.status = 'done' and w.verified_at is null
               join alarms a on a.tenant_id = w.tenant_id and a.id = coalesce(w.reopened_by_alarm_id, w.alarm_id)
                            and a.device_id = k.device_id and a.type = k.type
               left join work_order_rules r on r.tenant_id = w.tenant_id
               where w.closed_at >= k.at - make_interval(days => coalesce(r.reopen_window_days, $5))""",
            list(tenants), list(devices), list(types), list(ats), DEFAULT_REOPEN_WINDOW_DAYS)
        return sorted(r["n"] for r in rows)

    # Devices held in maintenance while the work goes on

    async def start_maintenance(self, tenant_id: UUID, work_order_id: UUID) -> list[tuple[UUID, str]]:
        """Put the work order's devices in maintenance, remembering the status to give back: the
        device's own, or, when another work order already holds it, the one that work order kept.
        A device someone put in maintenance by hand is left to them. Returns (id, previous status)
        of those changed."""
        rows = await self.conn.fetch(
            """with previous as (
                   select v.id, v.status from devices v join work_order_devices d
                     on d.tenant_id = v.tenant_id and d.device_id = v.id
                   where d.tenant_id = $1 and d.work_order_id = $2),
               holders as (
                   select distinct on (device_id) device_id, status_before from work_order_devices
                   where tenant_id = $1 and work_order_id <> $2 and status_before is not null
                   order by device_id),
               held as (
                   update work_order_devices d set status_before = coalesce(h.status_before, v.status)
                   from devices v left join holders h on h.device_id = v.id
                   where d.tenant_id = $1 and d.work_order_id = $2 and d.status_before is null
                     and v.tenant_id = d.tenant_id and v.id = d.device_id and v.status <> 'decommissioned'
                     and (v.status <> 'maintenance' or h.device_id is not null)
                   returning d.device_id)
               update devices v set status = 'maintenance', updated_at = now()
               from held join previous p on p.id = held.device_id
               where v.tenant_id = $1 and v.id = held.device_id and v.status <> 'maintenance'
               returning v.id, p.status as previous""",
            tenant_id, work_order_id)
        return [(r["id"], r["previous"]) for r in rows]

    async def end_maintenance(self, tenant_id: UUID, work_order_id: UUID) -> list[tuple[UUID, str]]:
        """Give back the status each device had, unless someone changed it meanwhile or another
        work order is still working on it. Online or offline is what the device is now: a crew
        often powers a controller off for the work, and it may or may not be registered again."""
        rows = await self.conn.fetch(
            """with released as (
                   select device_id, status_before from work_order_devices
                   where tenant_id = $1 and work_order_id = $2 and status_before is not null for update),
               forgotten as (
                   update work_order_devices d set status_before = null from released
                   where d.tenant_id = $1 and d.work_order_id = $2 and d.device_id = released.device_id)
               update devices v set updated_at = now(), status = case
                   when released.status_before not in ('provisioned', 'online', 'offline') then released.status_before
                   when exists (select 1 from registrations r where r.tenant_id = $1 and r.device_id = v.id)
                   then 'online'
                   when released.status_before = 'provisioned' then 'provisioned' else 'offline' end
               from released
               where v.tenant_id = $1 and v.id = released.device_id and v.status = 'maintenance'
                 and not exists (select 1 from work_order_devices o
                                 where o.tenant_id = $1 and o.device_id = v.id and o.work_order_id <> $2
                                   and o.status_before is not null)
               returning v.id, v.status""",
            tenant_id, work_order_id)
        return [(r["id"], r["status"]) for r in rows]

    # The city's rules

    async def rules(self, tenant_id: UUID) -> tuple[WorkOrderRules, int]:
        row = await self.conn.fetchrow(
            """select alarm_rules, due_hours, reopen_window_days, crew_position_fresh_minutes, version
               from work_order_rules where tenant_id = $1""",
            tenant_id)
        if row is None:
            return WorkOrderRules(), 0
        return msgspec.convert({"alarm_rules": row["alarm_rules"], "due_hours": row["due_hours"],
                                "reopen_window_days": row["reopen_window_days"],
                                "crew_position_fresh_minutes": row["crew_position_fresh_minutes"]},
                               WorkOrderRules), row["version"]

    async def put_rules(self, tenant_id: UUID, rules: WorkOrderRules) -> int:
        as_json = msgspec.to_builtins(rules)
        return await self.conn.fetchval(
            """insert into work_order_rules (tenant_id, alarm_rules, due_hours, reopen_window_days,
                                             crew_position_fresh_minutes)
               values ($1, $2::jsonb, $3::jsonb, $4, $5)
               on conflict (tenant_id) do update set alarm_rules = excluded.alarm_rules,
                   due_hours = excluded.due_hours, reopen_window_days = excluded.reopen_window_days,
                   crew_position_fresh_minutes = excluded.crew_position_fresh_minutes,
                   version = work_order_rules.version + 1, updated_at = now()
               returning version""",
            tenant_id, as_json["alarm_rules"], as_json["due_hours"], rules.reopen_window_days,
            rules.crew_position_fresh_minutes)

    # Attachments

    async def add_attachment(self, tenant_id: UUID, work_order_id: UUID, media_type: str, content: bytes,
                             created_by: str) -> Attachment:
        row = await self.conn.fetchrow(
            """insert into work_order_attachments (tenant_id, work_order_id, media_type, size_bytes, content, created_by)
               values ($1, $2, $3, $4, $5, $6)
               returning id, work_order_id, media_type, size_bytes, created_by, created_at""",
            tenant_id, work_order_id, media_type, len(content), content, created_by)
        return Attachment(**dict(row))

    async def attachments(self, tenant_id: UUID, work_order_id: UUID) -> list[Attachment]:
        rows = await self.conn.fetch(
            """select id, work_order_id, media_type, size_bytes, created_by, created_at from work_order_attachments
               where tenant_id = $1 and work_order_id = $2 order by created_at, id""", tenant_id, work_order_id)
        return [Attachment(**dict(r)) for r in rows]

    async def attachment_content(self, tenant_id: UUID, work_order_id: UUID,
                                 attachment_id: UUID) -> tuple[str, bytes] | None:
        row = await self.conn.fetchrow(
            """select media_type, content from work_order_attachments
               where tenant_id = $1 and work_order_id = $2 and id = $3""", tenant_id, work_order_id, attachment_id)
        return (row["media_type"], row["content"]) if row else None
