"""SQL for the evening's automation: which cities are due a plan for tomorrow, and the record
of one that failed."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

import asyncpg

from fleet.collection.models import CollectionSettings

DEFAULTS = CollectionSettings()


class AutomationRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def evenings_due(self, now: datetime, failed_before: datetime,
                           abandoned_before: datetime) -> list[asyncpg.Record]:
        """Cities with vehicles whose local time passed `plan_at` (a city without a settings row:
        the default) and whose scheduled plan for tomorrow (local) is missing, failed (solved_at: when it
        failed) before `failed_before`, or still solving since before `abandoned_before`; with that plan's id."""
        return await self.conn.fetch(
            """with cities as (
                   select t.id as tenant_id, (($1::timestamptz) at time zone t.timezone) as local_now,
                          coalesce(cs.time_limit_s, $4) as time_limit_s,
                          case when cs.tenant_id is null then $5::time else cs.plan_at end as plan_at
                   from tenants t left join collection_settings cs on cs.tenant_id = t.id
                   where exists (select 1 from collection_vehicles v where v.tenant_id = t.id))
               select c.tenant_id, c.local_now::date + 1 as day, c.time_limit_s, p.id as plan_id
               from cities c
               left join collection_plans p on p.tenant_id = c.tenant_id and p.source = 'schedule'
                    and p.date = c.local_now::date + 1 and p.waste_kind is null
               where c.plan_at is not null and c.local_now::time >= c.plan_at
                 and (p.id is null or (p.status = 'failed' and coalesce(p.solved_at, p.created_at) < $2)
                      or (p.status = 'solving' and p.created_at < $3))
               order by c.tenant_id""",
            now, failed_before, abandoned_before, DEFAULTS.time_limit_s, DEFAULTS.plan_at)

    async def drop_plan(self, tenant_id: UUID, plan_id: UUID) -> None:
        await self.conn.execute("delete from collection_plans where tenant_id = $1 and id = $2", tenant_id, plan_id)

    async def record_failure(self, tenant_id: UUID, day: date, time_limit_s: int, error: str,
                             now: datetime) -> UUID | None:
        """The scheduled plan for `day` as failed with `error`: the one left solving, else a new
        row; None when another node's plan for that date holds the place."""
        plan_id = await self.conn.fetchval(
            """update collection_plans set status = 'failed', error = $3, solved_at = $4
               where tenant_id = $1 and date = $2 and source = 'schedule' and waste_kind is null
                 and status in ('solving', 'failed')
               returning id""", tenant_id, day, error, now)
        return plan_id or await self.conn.fetchval(
            """insert into collection_plans (tenant_id, date, status, source, time_limit_s, error, solved_at)
               values ($1, $2, 'failed', 'schedule', $3, $4, $5)
               on conflict (tenant_id, date, coalesce(waste_kind, '')) where source = 'schedule' do nothing
               returning id""", tenant_id, day, time_limit_s, error, now)
