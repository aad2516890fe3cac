"""SQL for the city at a glance: set-based counts over devices, alarms, state, routes and campaigns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from uuid import UUID

import asyncpg

from fleet.alarms.repository import ALARMS_WITH_DEVICES
from fleet.alarms.rules.streetlight import DARK_W, LAMP_POWER, SUPPLY_POWER
from fleet.collection.driving_repository import FILL_PATH
from fleet.lighting.repository import DIMMER_3311, MEASURED_3416

IN_SERVICE = "d.tenant_id = $1 and d.status <> 'decommissioned'"
# What a light burns at by the latest report: 3311's Dimmer, 3416's measured level, the meter's.
LEVEL_PATHS = (DIMMER_3311, MEASURED_3416, "/3418/0/35")
# What its lamp draws, the lamp's own reading first (the dark-at-night rule's order).
LAMP_POWER_PATHS = (LAMP_POWER, SUPPLY_POWER)
# Campaigns under way: waiting for a second admin, for their start, rolling out, or paused.
UNDER_WAY = ("awaiting_approval", "scheduled", "running", "paused")
MAX_CAMPAIGNS = 50


class OverviewRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def plan_for_these_values(self) -> None:
        """Plan this transaction's statements for their own city and view, not generically.

        After five runs of a pooled statement PostgreSQL may keep a generic plan, made without
        the bbox or the city: it guessed 2 devices in the whole city's view, sorted 100,000 rows
        on disk and probed the alarms once per device (GET /api/v1/map at zoom 11: 320 ms
        against 70 ms, EXPLAIN ANALYZE at 100,000 devices; found by bench/dashboard). Custom
        plans cost a fraction of a millisecond."""
        await self.conn.execute("set local plan_cache_mode = force_custom_plan")

    async def devices_by_kind_status(self, tenant_id: UUID, *, per_district: bool = False) -> list[asyncpg.Record]:
        """Devices in service per kind and status; `per_district`: per district too (devices
        with no district left out), what GET /api/v1/districts lists."""
        if per_district:
            return await self.conn.fetch(
                f"select d.district, d.kind, d.status, count(*)::int as n from devices d where {IN_SERVICE}"
                " and d.district is not null group by d.district, d.kind, d.status order by d.district", tenant_id)
        return await self.conn.fetch(
            f"select d.kind, d.status, count(*)::int as n from devices d where {IN_SERVICE}"
            " group by d.kind, d.status", tenant_id)

    async def active_alarms(self, tenant_id: UUID) -> list[asyncpg.Record]:
        """Alarms in status active per district and severity, as the alarms API filters them."""
        return await self.conn.fetch(
            f"""select d.district, a.severity, count(*)::int as n from {ALARMS_WITH_DEVICES}
                where a.tenant_id = $1 and a.status = 'active' group by d.district, a.severity""", tenant_id)

    async def lights_lit(self, tenant_id: UUID) -> asyncpg.Record:
        """Lights in service, and those whose latest reported level (of any of LEVEL_PATHS) is above 0
        and whose lamp draws power (as the dark-at-night rule judges it)."""
        # Set-based over the index on (tenant_id, path): one pass over the cities' level rows and
        # one over their power rows. A lamp that failed keeps reporting its level (the demo's
        # failed lights said 100 %), so the level alone counted dark lights as lit.
        return await self.conn.fetchrow(
            f"""with levels as (
                    select distinct on (s.device_id) s.device_id, s.v_num from device_state s
                    where s.tenant_id = $1 and s.path = any($2::text[]) and s.v_num is not null
                    order by s.device_id, s.time desc),
                powers as (
                    select distinct on (s.device_id) s.device_id, s.v_num from device_state s
                    where s.tenant_id = $1 and s.path = any($3::text[]) and s.v_num is not null
                    order by s.device_id, array_position($3::text[], s.path))
                select count(*)::int as lights,
                       count(*) filter (where l.v_num > 0 and coalesce(p.v_num >= $4, true))::int as lit
                from devices d left join levels l on l.device_id = d.id left join powers p on p.device_id = d.id
                where {IN_SERVICE} and d.kind = 'streetlight'""",
            tenant_id, list(LEVEL_PATHS), list(LAMP_POWER_PATHS), DARK_W)

    async def bins_by_fill(self, tenant_id: UUID, width: int, buckets: int) -> list[asyncpg.Record]:
        """(bucket, n) of bins in service; bucket null: no fill reported."""
        return await self.conn.fetch(
            # greatest() and least() skip nulls: a bin with no reading must stay out of bucket 0.
            f"""select case when s.v_num is not null then least(greatest(floor(s.v_num / $3)::int, 0), $4 - 1)
                       end as bucket, count(*)::int as n
                from devices d left join device_state s
                     on s.tenant_id = $1 and s.device_id = d.id and s.path = $2 and s.v_num is not null
                where {IN_SERVICE} and d.kind = 'waste_bin' group by 1""", tenant_id, FILL_PATH, width, buckets)

    async def routes_of_day(self, tenant_id: UUID, day: date) -> asyncpg.Record:
        """Routes of the day's plans in force (not superseded or failed), cancelled ones left out."""
        return await self.conn.fetchrow(
            """select count(*)::int as routes,
                      count(*) filter (where r.status in ('planned', 'assigned'))::int as planned,
                      count(*) filter (where r.status = 'in_progress')::int as in_progress,
                      count(*) filter (where r.status = 'completed')::int as completed,
                      coalesce(sum(c.stops), 0)::int as stops_total, coalesce(sum(c.done), 0)::int as stops_done
               from collection_routes r
               join collection_plans p on p.tenant_id = r.tenant_id and p.id = r.plan_id
               cross join lateral (
                   select count(*) as stops, count(*) filter (where s.status = 'done') as done
                   from collection_stops s where s.tenant_id = r.tenant_id and s.route_id = r.id) c
               where r.tenant_id = $1 and p.date = $2 and p.status not in ('superseded', 'failed')
                 and r.status <> 'cancelled'""", tenant_id, day)

    async def access_points(self, tenant_id: UUID) -> asyncpg.Record:
        return await self.conn.fetchrow(
            f"""select count(*)::int as total, count(*) filter (where d.status = 'online')::int as online
                from devices d where {IN_SERVICE} and d.kind = 'wifi_ap'""", tenant_id)

    async def campaigns_under_way(self, tenant_id: UUID) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select c.id, c.name, c.status, c.device_count from firmware_campaigns c
               where c.tenant_id = $1 and c.status = any($2::text[])
               order by c.created_at desc, c.id desc limit $3""", tenant_id, list(UNDER_WAY), MAX_CAMPAIGNS)

    async def wattage_by_cell(self, tenant_id: UUID, light_ids: Sequence[UUID],
                              kin: Sequence[UUID]) -> list[asyncpg.Record]:
        """Nominal wattage of the lights in service summed per district, 0.01° cell and kin.

        `kin[i]` stands for `light_ids[i]` and every light the schedule names exactly as it; the
        lights it names not at all stand together as kin null. Cells (cy, cx) are the coordinates
        x 100, rounded, as fleet.lighting.astro.rounded rounds them to 2 decimals, except that a
        position within a rounding error of halfway may land in the neighbouring cell (its sun
        differs by seconds). Lights without a nominal wattage are left out."""
        # Rounded as float8, not numeric: the numeric casts cost twice the whole query (EXPLAIN
        # ANALYZE, 100,000 devices: 75 ms against 172 ms).
        return await self.conn.fetch(
            """select k.kin, d.district, round(d.lat * 100)::int as cy, round(d.lon * 100)::int as cx,
                      sum((d.attributes ->> 'nominal_wattage')::float8) as watts
               from devices d left join unnest($2::uuid[], $3::uuid[]) as k (id, kin) on k.id = d.id
               where d.tenant_id = $1 and d.kind = 'streetlight' and d.status <> 'decommissioned'
                 and (d.attributes ->> 'nominal_wattage')::float8 > 0
               group by 1, 2, 3, 4""", tenant_id, list(light_ids), list(kin))

    # --- the map ---

    async def count_in_box(self, tenant_id: UUID, box: Sequence[float]) -> int:
        return await self.conn.fetchval(
            f"select count(*)::int from devices d where {IN_SERVICE}"
            " and d.lat between $3 and $5 and d.lon between $2 and $4", tenant_id, *box)

    async def cells_in_box(self, tenant_id: UUID, box: Sequence[float], cell_deg: float) -> list[asyncpg.Record]:
        """Per grid cell and status: members, their summed and extreme positions, their worst severity rank.

        Devices and active alarms are grouped into cells apart and the two small results joined:
        joining each of 100,000 devices to the alarms first let the planner pick a nested loop
        over the alarm aggregate (seconds, measured by bench/dashboard)."""
        return await self.conn.fetch(
            f"""with cells as (
                    select floor(d.lon / $6)::bigint as cx, floor(d.lat / $6)::bigint as cy, d.status,
                           count(*)::int as n, sum(d.lat) as sum_lat, sum(d.lon) as sum_lon,
                           min(d.lat) as min_lat, max(d.lat) as max_lat, min(d.lon) as min_lon,
                           max(d.lon) as max_lon
                    from devices d
                    where {IN_SERVICE} and d.lat between $3 and $5 and d.lon between $2 and $4
                    group by 1, 2, 3),
                alarmed as (
                    select floor(d.lon / $6)::bigint as cx, floor(d.lat / $6)::bigint as cy, d.status,
                           min(array_position(array['critical','major','minor','warning'], a.severity)) as rank
                    from alarms a join devices d on d.tenant_id = a.tenant_id and d.id = a.device_id
                    where a.tenant_id = $1 and a.status = 'active' and {IN_SERVICE}
                      and d.lat between $3 and $5 and d.lon between $2 and $4
                    group by 1, 2, 3)
                select c.*, al.rank from cells c left join alarmed al using (cx, cy, status)""",
            tenant_id, *box, cell_deg)

    async def devices_in_box(self, tenant_id: UUID, box: Sequence[float], limit: int) -> list[asyncpg.Record]:
        # At most `limit` devices: each one's worst active alarm by the alarms_device index.
        return await self.conn.fetch(
            f"""select d.id, d.endpoint, d.kind, d.status, d.lat, d.lon, d.district, w.rank
                from (select * from devices d
                      where {IN_SERVICE} and d.lat between $3 and $5 and d.lon between $2 and $4
                      order by d.seq limit $6) d
                left join lateral (
                    select min(array_position(array['critical','major','minor','warning'], a.severity)) as rank
                    from alarms a where a.tenant_id = d.tenant_id and a.device_id = d.id
                      and a.status = 'active') w on true
                order by d.seq""", tenant_id, *box, limit)

    async def district_points(self, tenant_id: UUID, grid_deg: float) -> list[asyncpg.Record]:
        """Per district and grid column (longitude rounded to the grid): the lowest and highest
        latitude, how many devices stand there and their summed position. A convex hull needs
        no more than each column's two ends, so 100,000 devices come back as a few thousand rows
        (a row per distinct position made a cold outline cost 0.4 s, bench/dashboard)."""
        return await self.conn.fetch(
            f"""select d.district, round(d.lon / $2) * $2 as lon, min(d.lat) as low, max(d.lat) as high,
                       count(*)::int as n, sum(d.lat) as sum_lat, sum(d.lon) as sum_lon
                from devices d where {IN_SERVICE} and d.district is not null
                group by 1, 2""", tenant_id, grid_deg)
