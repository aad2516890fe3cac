"""SQL for citizens' reports: the city's Open311 settings, matching a device, filing and reading requests."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from fleet.registry.repository import degrees_around, great_circle_m
from fleet.reports.models import (CLOSING_WORK_ORDER_STATUSES, Links, NewReport, Open311Settings, RequestQuery,
                                  ServiceRequest)

_DISTANCE = great_circle_m("$3", "$4")

# Only public columns: contact fields are never read back out of the table.
_PUBLIC = """s.service_request_id, s.service_code, s.description, s.lat, s.lon, s.address, s.address_id,
    s.media_url, s.requested_at, greatest(s.updated_at, w.updated_at) as updated_at,
    w.status as work_order_status, w.due_by as expected_at"""
_FROM = """service_requests s
    left join work_orders w on w.tenant_id = s.tenant_id and w.id = s.work_order_id"""


class ReportRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def settings(self, tenant_id: UUID) -> Open311Settings:
        row = await self.conn.fetchrow(
            "select match_radius_m, public_requests from open311_settings where tenant_id = $1", tenant_id)
        return Open311Settings(**dict(row)) if row else Open311Settings()

    async def nearest_device(self, tenant_id: UUID, kind: str, lat: float, lon: float,
                             radius_m: float) -> UUID | None:
        """The closest working device of `kind` within `radius_m` metres, if any."""
        # A latitude/longitude box first: plain ranges use the b-tree under row-level security
        # (migration 0006); the exact great-circle distance decides after.
        dlat, dlon = degrees_around(lat, radius_m)
        return await self.conn.fetchval(
            f"""select d.id from devices d
                where d.tenant_id = $1 and d.kind = $2 and d.status <> 'decommissioned'
                  and d.lat between $3::float8 - $6::float8 and $3 + $6
                  and d.lon between $4::float8 - $7::float8 and $4 + $7
                  and {_DISTANCE} <= $5::float8
                order by {_DISTANCE}, d.seq
                limit 1""",
            tenant_id, kind, lat, lon, radius_m, dlat, dlon)

    async def hold_device(self, tenant_id: UUID, device_id: UUID) -> None:
        """Reports about one device file one after another, so two citizens reporting the same
        lamp at once join one alarm and one work order instead of racing to make two."""
        await self.conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))",
                                f"citizen-report:{tenant_id}:{device_id}")

    async def insert(self, tenant_id: UUID, report: NewReport, service_request_id: str, api_key_id: UUID | None,
                     links: Links, at: datetime) -> None:
        form = report.form
        await self.conn.execute(
            """insert into service_requests
                   (tenant_id, service_request_id, service_code, description, attributes, lat, lon, address,
                    address_id, media_url, email, first_name, last_name, phone, reporter_device_id, account_id,
                    api_key_id, device_id, alarm_id, work_order_id, requested_at, updated_at)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                       $21, $21)""",
            tenant_id, service_request_id, report.service.code, form.description, report.attributes, form.lat,
            form.long, form.address_string, form.address_id, form.media_url, form.email, form.first_name,
            form.last_name, form.phone, form.device_id, form.account_id, api_key_id, links.device_id,
            links.alarm_id, links.work_order_id, at)

    async def by_ids(self, tenant_id: UUID, service_request_ids: list[str]) -> list[ServiceRequest]:
        rows = await self.conn.fetch(
            f"""select {_PUBLIC} from {_FROM}
                where s.tenant_id = $1 and s.service_request_id = any($2::text[])
                order by s.requested_at, s.seq""", tenant_id, service_request_ids)
        return [ServiceRequest(**dict(r)) for r in rows]

    async def search(self, tenant_id: UUID, query: RequestQuery, start: datetime,
                     end: datetime) -> list[ServiceRequest]:
        statuses = [s.value for s in query.statuses] or None
        rows = await self.conn.fetch(
            f"""select {_PUBLIC} from {_FROM}
                where s.tenant_id = $1 and s.requested_at >= $2 and s.requested_at <= $3
                  and ($4::text[] is null or s.service_code = any($4::text[]))
                  and ($5::text[] is null or (case when w.status = any($6::text[]) then 'closed' else 'open' end)
                                             = any($5::text[]))
                order by s.requested_at desc, s.seq desc
                limit $7""",
            tenant_id, start, end, list(query.service_codes) or None, statuses,
            list(CLOSING_WORK_ORDER_STATUSES), query.limit)
        return [ServiceRequest(**dict(r)) for r in rows]
