"""SQL for the city-wide gauges: small grouped counts across every city, by the city's slug."""

from __future__ import annotations

import asyncpg

from fleet.overview.repository import UNDER_WAY as CAMPAIGNS_UNDER_WAY
from fleet.workorders.models import OPEN as OPEN_WORK_ORDERS


class MetricsRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def registrations_online(self) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select t.slug as tenant, d.kind, count(*) as n
                 from registrations r
                 join devices d on d.id = r.device_id
                 join tenants t on t.id = r.tenant_id
                where r.expires_at > now()
                group by t.slug, d.kind""")

    async def commands_under_way(self) -> list[asyncpg.Record]:
        # Only those still to finish: finished ones are history (millions), not a level to watch.
        return await self.conn.fetch(
            """select t.slug as tenant, c.status as state, count(*) as n
                 from commands c join tenants t on t.id = c.tenant_id
                where c.status in ('queued', 'sent')
                group by t.slug, c.status""")

    async def alarms_not_cleared(self) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select t.slug as tenant, a.severity, a.status, count(*) as n
                 from alarms a join tenants t on t.id = a.tenant_id
                where a.status <> 'cleared'
                group by t.slug, a.severity, a.status""")

    async def work_orders_open(self) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select t.slug as tenant, w.status, count(*) as n
                 from work_orders w join tenants t on t.id = w.tenant_id
                where w.status = any($1::text[])
                group by t.slug, w.status""", sorted(OPEN_WORK_ORDERS))

    async def campaign_devices(self) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select t.slug as tenant, c.id::text as campaign, cd.state, count(*) as n
                 from firmware_campaigns c
                 join firmware_campaign_devices cd on cd.tenant_id = c.tenant_id and cd.campaign_id = c.id
                 join tenants t on t.id = c.tenant_id
                where c.status = any($1::text[])
                group by t.slug, c.id, cd.state""", list(CAMPAIGNS_UNDER_WAY))
