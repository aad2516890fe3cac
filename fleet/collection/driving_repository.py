"""SQL for the routes crews drive: routes with their progress, stops with their bins, marking
stops, the emptyings they record, and the bins whose own fill drop completes their stop."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg

from fleet.collection.models import RouteOut, RouteProgress, RouteStop, StopDevice

FILL_PATH = "/3435/0/2"

# A route's row with its plan's date, its vehicle's waste kind and its stops counted.
_ROUTE = """
    select r.*, p.date, p.status as plan_status, v.waste_kind, c.stops, c.done, c.skipped, c.bins,
           c.behind_s
    from collection_routes r
    join collection_plans p on p.tenant_id = r.tenant_id and p.id = r.plan_id
    join collection_vehicles v on v.tenant_id = r.tenant_id and v.id = r.vehicle_id
    cross join lateral (
        select count(*) as stops,
               count(*) filter (where s.status = 'done') as done,
               count(*) filter (where s.status = 'skipped') as skipped,
               count(*) filter (where s.kind = 'bin') as bins,
               (array_agg(extract(epoch from s.done_at - s.arrival) order by s.done_at desc)
                    filter (where s.status = 'done'))[1] as behind_s
        from collection_stops s where s.tenant_id = r.tenant_id and s.route_id = r.id) c"""

_STOPS = """
    select s.*, d.endpoint, d.address, d.district, d.attributes ->> 'waste_kind' as waste_kind,
           d.status as device_status, ds.v_num as fill_now, ds.time as fill_at
    from collection_stops s
    left join devices d on d.tenant_id = s.tenant_id and d.id = s.device_id
    left join device_state ds on ds.tenant_id = s.tenant_id and ds.device_id = s.device_id
                             and ds.path = '/3435/0/2'"""

_ROUTE_COLUMNS = ("status", "crew_id", "started_at", "finished_at", "actual_km", "bins_emptied")


def route_from_row(row: asyncpg.Record, now: datetime, stops: list[RouteStop] | None = None) -> RouteOut:
    done, skipped, total = row["done"], row["skipped"], row["stops"]
    started, finished = row["started_at"], row["finished_at"]
    # Whole seconds: the control room reads minutes, not microseconds.
    actual_s = float(round(((finished or now) - started).total_seconds())) if started is not None else None
    progress = RouteProgress(
        stops=total, done=done, skipped=skipped, left=total - done - skipped, bins=row["bins"],
        bins_emptied=row["bins_emptied"], percent=round(100.0 * (done + skipped) / total, 1) if total else 100.0,
        expected_duration_s=row["duration_s"], actual_duration_s=actual_s,
        expected_km=round(row["distance_m"] / 1000, 3), actual_km=row["actual_km"],
        behind_s=float(round(row["behind_s"])) if row["behind_s"] is not None else None)
    return RouteOut(
        id=row["id"], plan_id=row["plan_id"], date=row["date"], vehicle_id=row["vehicle_id"],
        vehicle_number=row["vehicle_number"], status=row["status"], starts_at=row["starts_at"],
        ends_at=row["ends_at"], distance_m=row["distance_m"], duration_s=row["duration_s"],
        bins_emptied=row["bins_emptied"], version=row["version"], progress=progress, crew_id=row["crew_id"],
        waste_kind=row["waste_kind"], actual_km=row["actual_km"], started_at=started, finished_at=finished,
        stops=stops)


def stop_from_row(row: asyncpg.Record) -> RouteStop:
    device = None
    if row["device_id"] is not None:
        device = StopDevice(row["device_id"], row["endpoint"], row["address"], row["district"], row["waste_kind"],
                            row["device_status"], row["fill_now"], row["fill_at"])
    return RouteStop(
        id=row["id"], seq=row["seq"], kind=row["kind"], lat=row["lat"], lon=row["lon"], arrival=row["arrival"],
        load_after=row["load_after"], required=row["required"], status=row["status"], device=device,
        disposal_site_id=row["disposal_site_id"], expected_fill=row["expected_fill"],
        skip_reason=row["skip_reason"], done_source=row["done_source"], done_at=row["done_at"],
        done_by=row["done_by"], notes=row["notes"], work_order_id=row["work_order_id"])


class DrivingRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def route_row(self, tenant_id: UUID, route_id: UUID) -> asyncpg.Record | None:
        return await self.conn.fetchrow(f"{_ROUTE} where r.tenant_id = $1 and r.id = $2", tenant_id, route_id)

    async def lock_route(self, tenant_id: UUID, route_id: UUID) -> asyncpg.Record | None:
        """The route's own row, locked, with its plan's status: every change to a route and its
        stops goes one at a time. The plan's row is share-locked first, so a re-plan (which locks
        it to copy the stops, then cancels the old routes) waits for this change, or this one sees
        the plan superseded; plan before route, in that order everywhere, so neither deadlocks."""
        plan_status = await self.conn.fetchval(
            """select p.status from collection_plans p
               join collection_routes r on r.tenant_id = p.tenant_id and r.plan_id = p.id
               where r.tenant_id = $1 and r.id = $2
               for share of p""", tenant_id, route_id)
        if plan_status is None:
            return None
        return await self.conn.fetchrow(
            """select r.*, $3::text as plan_status from collection_routes r
               where r.tenant_id = $1 and r.id = $2 for update""", tenant_id, route_id, plan_status)

    async def successor(self, tenant_id: UUID, route_id: UUID) -> UUID | None:
        """The route now standing in for a superseded plan's route: the same truck's route in the
        plan that replaced it, followed through every later re-plan to the plan in force."""
        return await self.conn.fetchval(
            """with recursive chain as (
                   select r.id, r.plan_id, r.vehicle_id, r.vehicle_number, 0 as depth
                   from collection_routes r where r.tenant_id = $1 and r.id = $2
                   union all
                   select n.id, n.plan_id, n.vehicle_id, n.vehicle_number, c.depth + 1
                   from chain c
                   join collection_plans p on p.tenant_id = $1 and p.replaces_id = c.plan_id
                                          and p.status in ('ready', 'superseded')
                   join collection_routes n on n.tenant_id = $1 and n.plan_id = p.id
                                           and n.vehicle_id = c.vehicle_id and n.vehicle_number = c.vehicle_number
                   where c.depth < 100)
               select id from chain where depth > 0 order by depth desc limit 1""", tenant_id, route_id)

    async def routes(self, tenant_id: UUID, *, day: date | None, plan_id: UUID | None, crew_id: UUID | None,
                     statuses: Sequence[str] | None, limit: int) -> list[asyncpg.Record]:
        """Routes in start order; without a plan named, only those of plans in force (not
        superseded or failed)."""
        return await self.conn.fetch(
            f"""{_ROUTE}
                where r.tenant_id = $1 and ($2::date is null or p.date = $2)
                  and ($3::uuid is null and p.status not in ('superseded', 'failed') or p.id = $3)
                  and ($4::uuid is null or r.crew_id = $4)
                  and ($5::text[] is null or r.status = any($5))
                order by p.date desc, r.starts_at, r.vehicle_id, r.vehicle_number, r.id
                limit $6""",
            tenant_id, day, plan_id, crew_id, list(statuses) if statuses else None, limit)

    async def under_way(self, tenant_id: UUID, crew_id: UUID | None) -> list[UUID]:
        """Routes assigned or in progress (a crew's, or every crew's), in start order; a
        superseded plan's are not (its successor's routes carry their crews on)."""
        return [r["id"] for r in await self.conn.fetch(
            """select id from collection_routes
               where tenant_id = $1 and status in ('assigned', 'in_progress') and ($2::uuid is null or crew_id = $2)
                 and plan_id not in (select id from collection_plans where tenant_id = $1 and status = 'superseded')
               order by starts_at, id""", tenant_id, crew_id)]

    async def stops(self, tenant_id: UUID, route_id: UUID) -> list[RouteStop]:
        return [stop_from_row(r) for r in await self.conn.fetch(
            f"{_STOPS} where s.tenant_id = $1 and s.route_id = $2 order by s.seq", tenant_id, route_id)]

    async def stop(self, tenant_id: UUID, route_id: UUID, stop_id: UUID) -> asyncpg.Record | None:
        return await self.conn.fetchrow(
            "select * from collection_stops where tenant_id = $1 and route_id = $2 and id = $3",
            tenant_id, route_id, stop_id)

    async def crew_exists(self, tenant_id: UUID, crew_id: UUID) -> bool:
        return await self.conn.fetchval(
            "select exists (select 1 from crews where tenant_id = $1 and id = $2)", tenant_id, crew_id)

    async def update_stop(self, tenant_id: UUID, stop_id: UUID, *, status: str, skip_reason: str | None,
                          done_source: str | None, done_at: datetime | None, done_by: str | None,
                          notes: str | None, work_order_id: UUID | None) -> None:
        await self.conn.execute(
            """update collection_stops set status = $3, skip_reason = $4, done_source = $5, done_at = $6,
                      done_by = $7, notes = coalesce($8, notes), work_order_id = coalesce($9, work_order_id),
                      updated_at = now()
               where tenant_id = $1 and id = $2""",
            tenant_id, stop_id, status, skip_reason, done_source, done_at, done_by, notes, work_order_id)

    async def update_route(self, tenant_id: UUID, route_id: UUID, changes: dict[str, Any]) -> None:
        """Every change bumps the version a tablet sends back in If-Match."""
        columns = [c for c in _ROUTE_COLUMNS if c in changes]
        assignments = "".join(f", {c} = ${i}" for i, c in enumerate(columns, start=3))
        await self.conn.execute(
            f"""update collection_routes set version = version + 1, updated_at = now(){assignments}
                where tenant_id = $1 and id = $2""",
            tenant_id, route_id, *(changes[c] for c in columns))

    async def counts(self, tenant_id: UUID, route_id: UUID) -> asyncpg.Record:
        """Stops still planned, and bins emptied (bin stops done)."""
        return await self.conn.fetchrow(
            """select count(*) filter (where status = 'planned') as left,
                      count(*) filter (where status = 'done' and kind = 'bin') as emptied
               from collection_stops where tenant_id = $1 and route_id = $2""", tenant_id, route_id)

    async def driven(self, tenant_id: UUID, route_id: UUID) -> tuple[tuple[float, float] | None,
                                                                    list[tuple[float, float]], float]:
        """The depot the route's truck starts from, the stops done in the order they were done,
        and the city's road factor (its default without a settings row)."""
        depot = await self.conn.fetchrow(
            """select d.lat, d.lon, coalesce(cs.road_factor, 1.35) as road_factor
               from collection_routes r
               join collection_vehicles v on v.tenant_id = r.tenant_id and v.id = r.vehicle_id
               join collection_depots d on d.tenant_id = v.tenant_id and d.id = v.depot_id
               left join collection_settings cs on cs.tenant_id = r.tenant_id
               where r.tenant_id = $1 and r.id = $2""", tenant_id, route_id)
        rows = await self.conn.fetch(
            """select lat, lon from collection_stops where tenant_id = $1 and route_id = $2 and status = 'done'
               order by done_at, seq""", tenant_id, route_id)
        factor = depot["road_factor"] if depot else 1.35
        return ((depot["lat"], depot["lon"]) if depot else None), [(r["lat"], r["lon"]) for r in rows], factor

    async def fill_of(self, tenant_id: UUID, device_id: UUID) -> float | None:
        return await self.conn.fetchval(
            "select v_num from device_state where tenant_id = $1 and device_id = $2 and path = $3",
            tenant_id, device_id, FILL_PATH)

    async def emptied_by_fill(self, now: datetime, low_mark: float, min_drop: float, margin: float,
                              since: datetime, limit: int) -> list[asyncpg.Record]:
        """Planned bin stops of routes under way (assigned or in progress, planned to start
        since `since` and started by now — by the plan, or earlier by the crew —, of a plan in force) whose bin read, after the route's start, a fill at or below
        `low_mark` (at least `min_drop` under its last reading before the start, when there is
        one) or `margin` under that reading. Each with the first such reading. Every city (the
        system side).

        "The start" is never before the plan was first built (the first plan of its re-plans):
        the plan saw the bin full then, so a low reading from before (a bin that since filled
        up) is no emptying of this stop."""
        return await self.conn.fetch(
            """with recursive chain as (
                   select p.tenant_id, p.id as plan_id, p.replaces_id, p.created_at
                   from collection_plans p
                   where p.status = 'ready' and exists (
                       select 1 from collection_routes r where r.tenant_id = p.tenant_id and r.plan_id = p.id
                         and r.status in ('assigned', 'in_progress')
                         and coalesce(r.started_at, r.starts_at) <= $1 and r.starts_at > $5)
                   union all
                   select c.tenant_id, c.plan_id, p.replaces_id, p.created_at
                   from chain c join collection_plans p on p.tenant_id = c.tenant_id and p.id = c.replaces_id),
               planned as (select tenant_id, plan_id, min(created_at) as at from chain group by tenant_id, plan_id),
               open_stops as (
                   select s.tenant_id, s.id as stop_id, s.route_id, s.device_id,
                          greatest(coalesce(r.started_at, r.starts_at), pl.at) as since
                   from collection_routes r
                   join planned pl on pl.tenant_id = r.tenant_id and pl.plan_id = r.plan_id
                   join collection_stops s on s.tenant_id = r.tenant_id and s.route_id = r.id
                   where r.status in ('assigned', 'in_progress') and coalesce(r.started_at, r.starts_at) <= $1
                     and r.starts_at > $5
                     and s.status = 'planned' and s.kind = 'bin')
               select o.tenant_id, o.stop_id, o.route_id, o.device_id, b.v_num as fill_before,
                      e.time as emptied_at, e.v_num as fill_after
               from open_stops o
               join device_state ds on ds.device_id = o.device_id and ds.path = '/3435/0/2' and ds.time > o.since
               left join lateral (
                   select t.v_num from telemetry t
                   where t.device_id = o.device_id and t.path = '/3435/0/2' and t.time <= o.since
                   order by t.time desc limit 1) b on true
               cross join lateral (
                   select t.time, t.v_num from telemetry t
                   where t.device_id = o.device_id and t.path = '/3435/0/2' and t.time > o.since and t.time <= $1
                     and ((t.v_num <= $2 and (b.v_num is null or b.v_num - t.v_num >= $3))
                          or b.v_num - t.v_num >= $4)
                   order by t.time limit 1) e
               order by o.tenant_id, o.route_id
               limit $6""",
            now, low_mark, min_drop, margin, since, limit)
