"""Re-planning during a shift: a new plan (source 'replan') for the remaining stops and the bins
that became urgent, with every done or skipped stop kept where it was and each truck starting
from where it is, with what it carries; the old plan is superseded."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from uuid import UUID

from fleet.collection.driving import announce, route_out
from fleet.collection.models import Plan, PlanSource, PlanStatus, Route, Stop
from fleet.collection.routing_problem import Place
from fleet.collection.planning import Solved, persist_unassigned, plan_changed, solve_and_store, stop_rows
from fleet.collection.problem import Setting, at, local_midnight, read_setting, wall_seconds
from fleet.collection.plans_repository import PlanRepository
from fleet.collection.repository import SetupRepository
from fleet.db import Database
from fleet.errors import Conflict, NotFound

_ACTIVE = {"planned", "assigned", "in_progress"}


def finished(route: Route) -> list[Stop]:
    return [s for s in route.stops if s.status != "planned"]


def where_and_load(route: Route, depot: Place) -> tuple[Place, int]:
    """Where the truck is (its last done stop; the depot before its first) and the litres it
    carries: the planned litres of the bins done since it last unloaded (a skipped bin added none)."""
    here, load, previous = depot, 0, 0
    for s in sorted(route.stops, key=lambda s: s.seq):
        litres = s.load_after - previous if s.kind == "bin" else 0
        previous = s.load_after
        if s.status != "done":
            continue
        here = Place(str(s.device_id or s.disposal_site_id), s.lat, s.lon)
        load = 0 if s.kind == "disposal" else load + max(0, litres)
    return here, load


def remaining(old: Plan) -> dict[UUID, tuple[bool, float]]:
    out: dict[UUID, tuple[bool, float]] = {}
    for r in old.routes:
        for s in r.stops:
            if s.status == "planned" and s.kind == "bin":
                out[s.device_id] = (s.required, s.expected_fill if s.expected_fill is not None else 100.0)
    return out


def truck_fleets(setting: Setting, old: Plan, vehicles: dict, now_s: int) -> list[tuple[Route, int, int]]:
    """Each active route of the old plan becomes a fleet of one truck of its kind's problem:
    (route, kind index, fleet index)."""
    placed = []
    for k, kind in enumerate(setting.kinds):
        fleets, trucks = [], []
        by_vehicle = {str(f.key): f for f in kind.problem.fleets}
        for route in old.routes:
            template = by_vehicle.get(str(route.vehicle_id))
            if template is None or route.status not in _ACTIVE:
                continue
            here, load = where_and_load(route, template.depot)
            start = min(max(template.shift_start_s, now_s), template.shift_end_s)
            placed.append((route, k, len(fleets)))
            fleets.append(dataclasses.replace(template, count=1, shift_start_s=start, start=here,
                                              initial_litres=load))
            trucks.append(vehicles[route.vehicle_id])
        kind.problem = dataclasses.replace(kind.problem, fleets=tuple(fleets))
        kind.vehicles = trucks
    return placed


async def replan(db: Database, tenant_id: UUID, plan_id: UUID, *, created_by: UUID | None = None,
                 time_limit_s: int | None = None, routing_url: str | None = None,
                 now: datetime | None = None) -> Plan:
    now = now or datetime.now(UTC)
    async with db.tenant_tx(tenant_id) as conn:
        plans = PlanRepository(conn)
        old = await plans.plan(tenant_id, plan_id, for_update=True)
        if old is None:
            raise NotFound(f"plan {plan_id} not found")
        if old.status != PlanStatus.READY:
            raise Conflict(f"plan {plan_id} is {old.status}; only a ready plan is re-planned")
        dealt_with = frozenset(s.device_id for r in old.routes for s in finished(r) if s.device_id)
        setting = await read_setting(conn, tenant_id, old.date, old.waste_kind, now=now, exclude=dealt_with,
                                     keep=remaining(old))
        vehicles = {v.id: v for v in await SetupRepository(conn).vehicles(tenant_id)}
        midnight = local_midnight(old.date, setting.zone)
        placed = truck_fleets(setting, old, vehicles, wall_seconds(now, midnight))
        limit = time_limit_s or setting.settings.time_limit_s
        new_id = await plans.insert_plan(tenant_id, old.date, old.waste_kind, PlanSource.REPLAN, old.id, limit,
                                         created_by)

    async def store(conn, tenant_id: UUID, new_id: UUID, setting: Setting, solved: list[Solved]) -> None:
        repo = PlanRepository(conn)
        current = await repo.plan(tenant_id, plan_id, for_update=True)
        if current.status != PlanStatus.READY:
            raise Conflict(f"plan {plan_id} became {current.status} while it was re-planned")
        carried = {(k, f): route for route, k, f in placed}
        successors: dict[UUID, UUID] = {}
        solved_routes = {(k, r.fleet): r for k, s in enumerate(solved) for r in s.solution.routes}
        for route in current.routes:
            keys = [key for key, r in carried.items() if r.id == route.id]
            new_route = solved_routes.get(keys[0]) if keys else None
            kept = finished(route)
            done_bins = {s.device_id for s in kept}
            starts_at, ends_at = route.starts_at, route.ends_at
            if new_route is not None:
                ends_at = at(setting.midnight, new_route.end_s)
            route_id = await repo.insert_route(
                tenant_id, new_id, route.vehicle_id, route.vehicle_number, starts_at, ends_at,
                new_route.distance_m if new_route else 0, new_route.duration_s if new_route else 0, carried=route)
            successors[route.id] = route_id
            rows = [(route_id, s.seq, s.kind, s.device_id, s.disposal_site_id, s.lat, s.lon, s.arrival, s.load_after,
                     s.expected_fill, s.required, s.status, s.skip_reason, s.done_source, s.done_at, s.done_by,
                     s.notes, s.work_order_id) for s in kept]
            if new_route is not None:
                # A stop marked done while the search ran stays done where it was, not planned again.
                first = max((s.seq for s in kept), default=-1) + 1
                rows += [row for row in stop_rows(route_id, new_route, solved[keys[0][0]].kind, setting.midnight,
                                                  first_seq=first) if row[3] is None or row[3] not in done_bins]
                rows = _renumbered(rows, first)
            await repo.insert_stops(tenant_id, rows)
        await persist_unassigned(repo, tenant_id, new_id, setting, solved)
        cancelled = await repo.supersede(tenant_id, plan_id)
        await plan_changed(conn, tenant_id, plan_id, replaced_by=new_id)
        # The tablets' sync hears of both: the old route cancelled (naming its successor), the new one.
        now = datetime.now(UTC)
        for old_id in cancelled:
            await announce(conn, tenant_id, await route_out(conn, tenant_id, old_id, now, with_stops=False),
                           replaced_by=successors.get(old_id))
        for new_route_id in successors.values():
            await announce(conn, tenant_id, await route_out(conn, tenant_id, new_route_id, now, with_stops=False))

    return await solve_and_store(db, tenant_id, new_id, setting, limit, routing_url, store)


def _renumbered(rows: list[tuple], first: int) -> list[tuple]:
    """New stops numbered on from `first` without gaps (a dropped one leaves none)."""
    kept = [r for r in rows if r[1] < first]
    new = [r for r in rows if r[1] >= first]
    return kept + [(r[0], first + i, *r[2:]) for i, r in enumerate(new)]
