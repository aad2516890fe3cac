"""Builds a pickup plan: reads the routing problem per waste kind (fleet.collection.problem),
solves it in a worker process under the time limit, and stores routes, stops and every bin left
out with why; the scheduler's evening job and the REST call both come here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic
from uuid import UUID

import structlog

from fleet.collection import solver
from fleet.collection.matrix import matrix_provider
from fleet.collection.models import CollectionSettings, Plan, PlanRequest, PlanSource, PlanStatus, PlanSummary
from fleet.collection.routing_problem import Place, Solution
from fleet.collection.plans_repository import PlanRepository
from fleet.collection.problem import Kind, Setting, at, read_setting
from fleet.collection.repository import SetupRepository
from fleet.collection.savings import compare, nearest_neighbour_m
from fleet.db import Database
from fleet.errors import Conflict, Unavailable
from fleet.events.models import PLAN_UPDATED
from fleet.events.service import publish

log = structlog.get_logger(__name__)


@dataclass
class Solved:
    kind: Kind
    solution: Solution
    round_m: int


_providers: dict[tuple, object] = {}


def provider(settings: CollectionSettings, routing_url: str | None):
    """One matrix provider per node and configuration, so its per-city cache outlives a plan."""
    key = (routing_url, settings.road_factor, settings.speed_kmh)
    if key not in _providers:
        _providers[key] = matrix_provider(settings, routing_url)
    return _providers[key]


async def solve_kinds(tenant_id: UUID, setting: Setting, time_limit_s: int, routing_url: str | None) -> list[Solved]:
    """Each kind's problem solved in turn; the time limit is shared among the kinds with bins:
    each gets an equal part of what is left when its turn comes (matrices and the fixed round's
    tour of the kinds before it count), at least a second."""
    matrices = provider(setting.settings, routing_url)
    deadline = monotonic() + time_limit_s
    waiting = sum(1 for k in setting.kinds if k.problem.visits)
    out = []
    for kind in setting.kinds:
        if kind.problem.visits:
            matrix = await matrices.matrix(tenant_id, solver.points(kind.problem))
            share = max(1.0, (deadline - monotonic()) / waiting)
            waiting -= 1
            solution = await solver.solve_elsewhere(kind.problem, matrix, time_limit_s=share)
        else:
            solution = Solution((), (), 0.0, True, 0.0)
        out.append(Solved(kind, solution, await fixed_round_m(tenant_id, kind, matrices)))
    return out


async def fixed_round_m(tenant_id: UUID, kind: Kind, matrices) -> int:
    """Metres of the fixed round's whole tour of the kind's bins (fleet.collection.savings)."""
    if not kind.round_bins or not kind.problem.fleets:
        return 0
    fleet = kind.problem.fleets[0]
    places = [fleet.depot, *fleet.disposal_sites,
              *(Place(str(b.device_id), b.lat, b.lon) for b, _ in kind.round_bins)]
    matrix = await matrices.matrix(tenant_id, places)
    sites = list(range(1, 1 + len(fleet.disposal_sites)))
    bins = list(range(1 + len(sites), len(places)))
    return nearest_neighbour_m(matrix.distance_m, 0, sites, bins, [litres for _, litres in kind.round_bins],
                               fleet.capacity_litres)


def stop_rows(route_id: UUID, solved_route, kind: Kind, midnight: datetime, *, first_seq: int = 0) -> list[tuple]:
    """The solved stops as collection_stops rows (plans_repository._STOP_COLUMNS)."""
    rows = []
    for seq, stop in enumerate(solved_route.stops, start=first_seq):
        if stop.visit is None:
            rows.append((route_id, seq, "disposal", None, UUID(stop.place.key), stop.place.lat, stop.place.lon,
                         at(midnight, stop.arrival_s), stop.load_after, None, True, "planned",
                         None, None, None, None, None, None))
        else:
            c = kind.choices[stop.visit]
            rows.append((route_id, seq, "bin", c.bin.device_id, None, stop.place.lat, stop.place.lon,
                         at(midnight, stop.arrival_s), stop.load_after, round(c.fill, 1), c.required, "planned",
                         None, None, None, None, None, None))
    return rows


def summary_of(setting: Setting, solved: list[Solved], unassigned: int) -> tuple[dict, float, float, float]:
    """The plan's summary, cost, metres and seconds."""
    stops = optional = reloads = 0
    metres = seconds = cost = runtime = 0.0
    round_m = round_bins = 0
    for s in solved:
        cost += s.solution.cost
        runtime += s.solution.runtime_s
        round_m += s.round_m
        round_bins += len(s.kind.round_bins)
        for r in s.solution.routes:
            metres += r.distance_m
            seconds += r.duration_s
            bins = [st for st in r.stops if st.visit is not None]
            stops += len(bins)
            optional += sum(not s.kind.problem.visits[st.visit].required for st in bins)
            last_bin = max((i for i, st in enumerate(r.stops) if st.visit is not None), default=-1)
            reloads += sum(1 for st in r.stops[:last_bin] if st.visit is None)
    saved = compare(bins=round_bins, round_days=setting.settings.round_days, round_m=round(round_m),
                    stops=stops, plan_m=metres)
    summary = PlanSummary(must_collect=setting.must, may_collect=setting.may, stops=stops, optional_visited=optional,
                          unassigned=unassigned, reloads=reloads, solver_runtime_s=round(runtime, 2), **saved)
    return dataclasses.asdict(summary), cost, metres, seconds


async def persist(conn, tenant_id: UUID, plan_id: UUID, setting: Setting, solved: list[Solved]) -> None:
    """Routes and stops as solved, then the bins left out and the plan ready."""
    repo = PlanRepository(conn)
    for s in solved:
        for r in s.solution.routes:
            vehicle = s.kind.vehicles[r.fleet]
            route_id = await repo.insert_route(tenant_id, plan_id, vehicle.id, r.vehicle_number,
                                               at(setting.midnight, r.start_s), at(setting.midnight, r.end_s),
                                               r.distance_m, r.duration_s)
            await repo.insert_stops(tenant_id, stop_rows(route_id, r, s.kind, setting.midnight))
    await persist_unassigned(repo, tenant_id, plan_id, setting, solved)


async def persist_unassigned(repo: PlanRepository, tenant_id: UUID, plan_id: UUID, setting: Setting,
                             solved: list[Solved]) -> None:
    """Every bin left out, the selection's and the solver's (one reason a bin, the first), the
    summary, and the plan ready."""
    left_out = list(setting.left_out)
    for s in solved:
        left_out += [(s.kind.choices[i].bin.device_id, reason, detail) for i, reason, detail in s.solution.unassigned]
    unique: dict[UUID, tuple[UUID, str, str | None]] = {}
    for device, reason, detail in left_out:
        unique.setdefault(device, (device, str(reason), detail))
    await repo.insert_unassigned(tenant_id, plan_id, list(unique.values()))
    summary, cost, metres, seconds = summary_of(setting, solved, len(unique))
    await repo.finish_plan(tenant_id, plan_id, status=PlanStatus.READY, cost=round(cost, 2), distance_m=metres,
                           duration_s=seconds, summary=summary)
    await plan_changed(repo.conn, tenant_id, plan_id)


async def plan_changed(conn, tenant_id: UUID, plan_id: UUID, **extra: object) -> None:
    """Tell the control room's live stream a plan became ready, failed or superseded, in the
    transaction that made it so."""
    plan = await PlanRepository(conn).head(tenant_id, plan_id)
    await publish(conn, tenant_id, PLAN_UPDATED, "plan", plan_id, {
        "plan_id": str(plan_id), "date": plan.date.isoformat(), "waste_kind": plan.waste_kind,
        "status": plan.status, "source": plan.source,
        "replaces_id": str(plan.replaces_id) if plan.replaces_id else None, "error": plan.error,
        **{k: str(v) if isinstance(v, UUID) else v for k, v in extra.items()}})


async def build_plan(db: Database, tenant_id: UUID, request: PlanRequest, *, source: PlanSource,
                     created_by: UUID | None = None, replaces: UUID | None = None,
                     routing_url: str | None = None) -> Plan:
    """The plan for the request's date, solved and stored (status ready, or failed with the
    error). The evening's plan (source 'schedule') is built once per city, date and kind: a
    second call returns the first's."""
    now = datetime.now(UTC)
    waste_kind = str(request.waste_kind) if request.waste_kind else None
    async with db.tenant_tx(tenant_id) as conn:
        settings = await SetupRepository(conn).settings(tenant_id)
        time_limit_s = request.time_limit_s or settings.time_limit_s
        plans = PlanRepository(conn)
        plan_id = await plans.insert_plan(tenant_id, request.date, waste_kind, source, replaces, time_limit_s,
                                          created_by)
        if plan_id is None:
            # Another node's evening plan holds the date: answered before reading every bin's forecast.
            plan_id = await plans.scheduled_plan(tenant_id, request.date, waste_kind)
            return await plans.plan(tenant_id, plan_id)
        setting = await read_setting(conn, tenant_id, request.date, waste_kind, now=now)
    return await solve_and_store(db, tenant_id, plan_id, setting, time_limit_s, routing_url, persist)


async def solve_and_store(db: Database, tenant_id: UUID, plan_id: UUID, setting: Setting, time_limit_s: int,
                          routing_url: str | None, store) -> Plan:
    """Solve outside any transaction (a search holds no connection), then store with `store`."""
    try:
        solved = await solve_kinds(tenant_id, setting, time_limit_s, routing_url)
        async with db.tenant_tx(tenant_id) as conn:
            await store(conn, tenant_id, plan_id, setting, solved)
    except Conflict as exc:
        # Another re-plan of the same plan stored first (two operators, two nodes): this one is
        # void, kept as failed, and the caller hears 409 rather than a plan that replaces nothing.
        log.info("pickup plan void", tenant_id=str(tenant_id), plan_id=str(plan_id), reason=exc.detail)
        async with db.tenant_tx(tenant_id) as conn:
            await PlanRepository(conn).finish_plan(tenant_id, plan_id, status=PlanStatus.FAILED, error=exc.detail)
            await plan_changed(conn, tenant_id, plan_id)
        raise
    except Exception as exc:
        if isinstance(exc, Unavailable):
            # The road-distance service (a peer) or the database is away: not our fault, retried later.
            log.warning("pickup plan failed", tenant_id=str(tenant_id), plan_id=str(plan_id), error=str(exc))
        else:
            log.error("pickup plan failed", tenant_id=str(tenant_id), plan_id=str(plan_id), exc_info=True)
        async with db.tenant_tx(tenant_id) as conn:
            await PlanRepository(conn).finish_plan(tenant_id, plan_id, status=PlanStatus.FAILED,
                                                   error=f"{type(exc).__name__}: {exc}"[:2000])
            await plan_changed(conn, tenant_id, plan_id)
    async with db.tenant_tx(tenant_id, readonly=True) as conn:
        return await PlanRepository(conn).plan(tenant_id, plan_id)
