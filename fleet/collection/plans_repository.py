"""SQL for pickup plans: the plan row, its routes and stops, the bins it left out, and what
planning reads of the city (its bins, their alarms, its timezone)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from uuid import UUID

import asyncpg

from fleet.collection.models import Plan, Route, Stop, Unassigned
from fleet.collection.selection import Bin

_STOP_COLUMNS = ("route_id", "seq", "kind", "device_id", "disposal_site_id", "lat", "lon", "arrival",
                 "load_after", "expected_fill", "required", "status", "skip_reason", "done_source", "done_at",
                 "done_by", "notes", "work_order_id")


def _stop(row: asyncpg.Record) -> Stop:
    return Stop(row["id"], row["route_id"], row["seq"], row["kind"], row["device_id"], row["disposal_site_id"],
                row["lat"], row["lon"], row["arrival"], row["load_after"], row["expected_fill"], row["required"],
                row["status"], row["skip_reason"], row["done_source"], row["done_at"], row["done_by"],
                row["notes"], row["work_order_id"])


def _route(row: asyncpg.Record, stops: tuple[Stop, ...] = ()) -> Route:
    return Route(row["id"], row["plan_id"], row["vehicle_id"], row["vehicle_number"], row["crew_id"], row["status"],
                 row["starts_at"], row["ends_at"], row["distance_m"], row["duration_s"], row["actual_km"],
                 row["bins_emptied"], row["started_at"], row["finished_at"], row["version"], stops)


def _plan(row: asyncpg.Record, routes: tuple[Route, ...] = (), unassigned: tuple[Unassigned, ...] = ()) -> Plan:
    summary = row["summary"]
    return Plan(row["id"], row["tenant_id"], row["date"], row["waste_kind"], row["status"], row["source"],
                row["replaces_id"], row["time_limit_s"], row["error"], row["cost"], row["distance_m"],
                row["duration_s"], json.loads(summary) if isinstance(summary, str) else summary,
                row["created_at"], row["solved_at"], routes, unassigned)


class PlanRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # -- what planning reads
    async def timezone(self, tenant_id: UUID) -> str:
        return await self.conn.fetchval("select timezone from tenants where id = $1", tenant_id)

    async def bins(self, tenant_id: UUID, waste_kinds: Sequence[str]) -> list[Bin]:
        """The city's waste bins of those kinds that may be collected (not under maintenance,
        not decommissioned)."""
        rows = await self.conn.fetch(
            """select id, lat, lon, district, attributes->>'waste_kind' as waste_kind,
                      coalesce((attributes->>'capacity_litres')::integer, 0) as capacity_litres
               from devices
               where tenant_id = $1 and kind = 'waste_bin' and status not in ('maintenance', 'decommissioned')
                 and attributes->>'waste_kind' = any($2::text[])
               order by seq""", tenant_id, list(waste_kinds))
        return [Bin(r["id"], r["lat"], r["lon"], r["district"], r["waste_kind"], r["capacity_litres"]) for r in rows]

    async def bin_kinds(self, tenant_id: UUID) -> list[str]:
        return list(await self.conn.fetchval(
            """select coalesce(array_agg(distinct attributes->>'waste_kind'), '{}') from devices
               where tenant_id = $1 and kind = 'waste_bin' and attributes ? 'waste_kind'""", tenant_id))

    async def alarmed(self, tenant_id: UUID) -> set[UUID]:
        """Bins with a bin_overflow or bin_fire alarm not cleared."""
        return {r["device_id"] for r in await self.conn.fetch(
            """select distinct device_id from alarms
               where tenant_id = $1 and type in ('bin_overflow', 'bin_fire') and status <> 'cleared'""", tenant_id)}

    # -- the plan
    async def insert_plan(self, tenant_id: UUID, day: date, waste_kind: str | None, source: str,
                          replaces: UUID | None, time_limit_s: int, created_by: UUID | None) -> UUID | None:
        """The new plan's id; None when the evening's plan for that city, date and kind exists."""
        return await self.conn.fetchval(
            """insert into collection_plans (tenant_id, date, waste_kind, source, replaces_id, time_limit_s, created_by)
               values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing returning id""",
            tenant_id, day, waste_kind, source, replaces, time_limit_s, created_by)

    async def scheduled_plan(self, tenant_id: UUID, day: date, waste_kind: str | None) -> UUID | None:
        return await self.conn.fetchval(
            """select id from collection_plans where tenant_id = $1 and date = $2
                 and coalesce(waste_kind, '') = coalesce($3, '') and source = 'schedule'""",
            tenant_id, day, waste_kind)

    async def finish_plan(self, tenant_id: UUID, plan_id: UUID, *, status: str, error: str | None = None,
                          cost: float | None = None, distance_m: float | None = None,
                          duration_s: float | None = None, summary: dict | None = None) -> None:
        await self.conn.execute(
            """update collection_plans set status = $3, error = $4, cost = $5, distance_m = $6, duration_s = $7,
                      summary = coalesce($8::jsonb, summary), solved_at = now()
               where tenant_id = $1 and id = $2""",
            tenant_id, plan_id, status, error, cost, distance_m, duration_s,
            json.dumps(summary) if summary is not None else None)

    async def supersede(self, tenant_id: UUID, plan_id: UUID) -> list[UUID]:
        """The plan superseded and its routes not over cancelled (their successors carry the day
        on: a tablet told of the change drops them); the ids of the routes cancelled."""
        await self.conn.execute("update collection_plans set status = 'superseded' where tenant_id = $1 and id = $2",
                                tenant_id, plan_id)
        return [r["id"] for r in await self.conn.fetch(
            """update collection_routes set status = 'cancelled', version = version + 1, updated_at = now()
               where tenant_id = $1 and plan_id = $2 and status in ('planned', 'assigned', 'in_progress')
               returning id""", tenant_id, plan_id)]

    async def insert_route(self, tenant_id: UUID, plan_id: UUID, vehicle_id: UUID, vehicle_number: int,
                           starts_at: datetime, ends_at: datetime, distance_m: float, duration_s: float, *,
                           carried: Route | None = None) -> UUID:
        """A route; `carried` (a re-plan) hands on its crew, status and what the day was so far."""
        c = carried
        return await self.conn.fetchval(
            """insert into collection_routes (tenant_id, plan_id, vehicle_id, vehicle_number, starts_at, ends_at,
                                              distance_m, duration_s, crew_id, status, actual_km, bins_emptied,
                                              started_at, finished_at)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10, 'planned'), $11, coalesce($12, 0), $13, $14)
               returning id""",
            tenant_id, plan_id, vehicle_id, vehicle_number, starts_at, ends_at, distance_m, duration_s,
            c and c.crew_id, c and c.status, c and c.actual_km, c and c.bins_emptied, c and c.started_at,
            c and c.finished_at)

    async def insert_stops(self, tenant_id: UUID, stops: Sequence[tuple]) -> None:
        """Rows in _STOP_COLUMNS order."""
        # COPY does not run under row-level security: an insert of arrays, unnested.
        if stops:
            columns = ("tenant_id", *_STOP_COLUMNS)
            types = ("uuid", "uuid", "integer", "text", "uuid", "uuid", "double precision", "double precision",
                     "timestamptz", "integer", "double precision", "boolean", "text", "text", "text",
                     "timestamptz", "text", "text", "uuid")
            await self.conn.execute(
                f"""insert into collection_stops ({', '.join(columns)})
                    select * from unnest({', '.join(f'${i + 1}::{t}[]' for i, t in enumerate(types))})""",
                *([row[i] for row in [(tenant_id, *s) for s in stops]] for i in range(len(columns))))

    async def insert_unassigned(self, tenant_id: UUID, plan_id: UUID,
                                rows: Sequence[tuple[UUID, str, str | None]]) -> None:
        if rows:
            await self.conn.execute(
                """insert into collection_unassigned (tenant_id, plan_id, device_id, reason, detail)
                   select $1, $2, * from unnest($3::uuid[], $4::text[], $5::text[])""",
                tenant_id, plan_id, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    # -- reading plans
    async def plan(self, tenant_id: UUID, plan_id: UUID, *, for_update: bool = False) -> Plan | None:
        row = await self.conn.fetchrow(
            f"select * from collection_plans where tenant_id = $1 and id = $2{' for update' if for_update else ''}",
            tenant_id, plan_id)
        if row is None:
            return None
        stops: dict[UUID, list[Stop]] = {}
        for s in await self.conn.fetch(
                """select s.* from collection_stops s join collection_routes r
                     on r.tenant_id = s.tenant_id and r.id = s.route_id
                   where r.tenant_id = $1 and r.plan_id = $2 order by s.route_id, s.seq""", tenant_id, plan_id):
            stops.setdefault(s["route_id"], []).append(_stop(s))
        routes = tuple(_route(r, tuple(stops.get(r["id"], ()))) for r in await self.conn.fetch(
            """select * from collection_routes where tenant_id = $1 and plan_id = $2
               order by starts_at, vehicle_id, vehicle_number, id""", tenant_id, plan_id))
        unassigned = tuple(Unassigned(u["device_id"], u["reason"], u["detail"]) for u in await self.conn.fetch(
            "select * from collection_unassigned where tenant_id = $1 and plan_id = $2 order by reason, device_id",
            tenant_id, plan_id))
        return _plan(row, routes, unassigned)

    async def head(self, tenant_id: UUID, plan_id: UUID) -> Plan | None:
        """The plan's own row, without its routes, stops and bins left out."""
        row = await self.conn.fetchrow("select * from collection_plans where tenant_id = $1 and id = $2",
                                       tenant_id, plan_id)
        return _plan(row) if row is not None else None

    async def plans(self, tenant_id: UUID, day: date | None, limit: int) -> list[Plan]:
        return [_plan(r) for r in await self.conn.fetch(
            """select * from collection_plans where tenant_id = $1 and ($2::date is null or date = $2)
               order by date desc, created_at desc limit $3""", tenant_id, day, limit)]
