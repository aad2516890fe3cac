"""Plans, routes and stops written straight into the tables (as the planner would), so the
routes crews drive are tested without solving anything."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from fleet.collection.models import Plan, PlanRequest, PlanSource
from fleet.db import Database


@dataclass
class Seeded:
    plan_id: UUID
    route_id: UUID
    stop_ids: list[UUID]
    bin_ids: list[UUID]
    site_id: UUID


async def add_bin(conn, tenant_id: UUID, endpoint: str, lat: float, lon: float) -> UUID:
    return await conn.fetchval(
        """insert into devices (tenant_id, kind, endpoint, lat, lon, district, address, status, attributes)
           values ($1, 'waste_bin', $2, $3, $4, 'Jung-gu', $2 || ' street', 'online',
                   '{"waste_kind": "inorganic", "capacity_litres": 240}') returning id""",
        tenant_id, endpoint, lat, lon)


async def seed_route(db: Database, tenant_id: UUID, *, bins: int = 3, day: date | None = None,
                     starts_at: datetime | None = None, prefix: str = "bin", source: str = "api") -> Seeded:
    """A ready plan with one route: `bins` bin stops ~500 m apart, then a disposal site."""
    starts_at = starts_at or datetime.now(UTC) - timedelta(hours=1)
    day = day or starts_at.date()
    async with db.tenant_tx(tenant_id) as conn:
        depot = await conn.fetchval(
            "insert into collection_depots (tenant_id, name, lat, lon) values ($1, $2, 37.56, 126.97) returning id",
            tenant_id, f"{prefix} depot")
        site = await conn.fetchval(
            """insert into collection_disposal_sites (tenant_id, name, lat, lon)
               values ($1, $2, 37.60, 126.97) returning id""", tenant_id, f"{prefix} site")
        vehicle = await conn.fetchval(
            """insert into collection_vehicles (tenant_id, name, waste_kind, capacity_litres, depot_id,
                                                shift_start, shift_end)
               values ($1, $2, 'inorganic', 8000, $3, '06:00', '14:00') returning id""",
            tenant_id, f"{prefix} truck", depot)
        plan = await conn.fetchval(
            """insert into collection_plans (tenant_id, date, status, source, time_limit_s, distance_m, duration_s)
               values ($1, $2, 'ready', $3, 2, 6000, 7200) returning id""", tenant_id, day, source)
        route = await conn.fetchval(
            """insert into collection_routes (tenant_id, plan_id, vehicle_id, starts_at, ends_at, distance_m,
                                              duration_s)
               values ($1, $2, $3, $4, $5, 6000, 7200) returning id""",
            tenant_id, plan, vehicle, starts_at, starts_at + timedelta(hours=2))
        bin_ids, stop_ids = [], []
        for n in range(bins):
            lat = 37.565 + 0.0045 * n
            device = await add_bin(conn, tenant_id, f"{prefix}-{tenant_id.hex[:6]}-{n}", lat, 126.97)
            bin_ids.append(device)
            stop_ids.append(await conn.fetchval(
                """insert into collection_stops (tenant_id, route_id, seq, kind, device_id, lat, lon, arrival,
                                                 load_after, expected_fill)
                   values ($1, $2, $3, 'bin', $4, $5, 126.97, $6, $7, 85) returning id""",
                tenant_id, route, n, device, lat, starts_at + timedelta(minutes=10 * (n + 1)), 200 * (n + 1)))
        stop_ids.append(await conn.fetchval(
            """insert into collection_stops (tenant_id, route_id, seq, kind, disposal_site_id, lat, lon, arrival,
                                             load_after)
               values ($1, $2, $3, 'disposal', $4, 37.60, 126.97, $5, 0) returning id""",
            tenant_id, route, bins, site, starts_at + timedelta(minutes=10 * (bins + 2))))
    return Seeded(plan, route, stop_ids, bin_ids, site)


async def replanned(db: Database, seeded: Seeded) -> UUID:
    """A re-plan of the seeded plan as the planner stores one: the same truck's route (crew,
    status, bin stops) in a new plan replacing it, the old plan superseded; the new route's id."""
    async with db.system_tx() as conn:
        newer = await conn.fetchval(
            """insert into collection_plans (tenant_id, date, status, source, time_limit_s, replaces_id)
               select tenant_id, date, 'ready', 'replan', 2, id from collection_plans where id = $1 returning id""",
            seeded.plan_id)
        route = await conn.fetchval(
            """insert into collection_routes (tenant_id, plan_id, vehicle_id, starts_at, ends_at, distance_m,
                                              duration_s, crew_id, status)
               select tenant_id, $2, vehicle_id, starts_at, ends_at, 0, 0, crew_id, status
               from collection_routes where id = $1 returning id""", seeded.route_id, newer)
        await conn.execute(
            """insert into collection_stops (tenant_id, route_id, seq, kind, device_id, lat, lon, arrival, load_after)
               select tenant_id, $2, seq, kind, device_id, lat, lon, arrival, load_after
               from collection_stops where route_id = $1 and kind = 'bin'""", seeded.route_id, route)
        await conn.execute("update collection_plans set status = 'superseded' where id = $1", seeded.plan_id)
    return route


async def add_vehicle(db: Database, tenant_id: UUID, name: str = "truck") -> UUID:
    async with db.tenant_tx(tenant_id) as conn:
        depot = await conn.fetchval(
            "insert into collection_depots (tenant_id, name, lat, lon) values ($1, $2, 37.56, 126.97) returning id",
            tenant_id, f"{name} depot")
        return await conn.fetchval(
            """insert into collection_vehicles (tenant_id, name, waste_kind, capacity_litres, depot_id,
                                                shift_start, shift_end)
               values ($1, $2, 'inorganic', 8000, $3, '06:00', '14:00') returning id""", tenant_id, name, depot)


def planner(calls: list[tuple[UUID, date]], fail: set[UUID] = frozenset()):
    """A planner that stores a ready, empty plan as fleet.collection.planning.build_plan would."""
    async def build(db: Database, tenant_id: UUID, request: PlanRequest, *, source: PlanSource,
                    created_by: UUID | None = None, replaces: UUID | None = None,
                    routing_url: str | None = None) -> Plan:
        calls.append((tenant_id, request.date))
        await asyncio.sleep(0)  # another node's pass may run meanwhile
        if tenant_id in fail:
            raise RuntimeError("no depot reachable")
        async with db.tenant_tx(tenant_id) as conn:
            row = await conn.fetchrow(
                """insert into collection_plans (tenant_id, date, status, source, time_limit_s, solved_at)
                   values ($1, $2, 'ready', $3, 30, now()) returning *""", tenant_id, request.date, source.value)
        return Plan(row["id"], tenant_id, row["date"], None, row["status"], row["source"], None, 30, None, None,
                    None, None, {}, row["created_at"], row["solved_at"])
    return build
