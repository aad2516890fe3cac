"""Builds a pickup plan: chooses the bins (fleet.collection.selection), states the routing problem
per waste kind, solves it in a worker process under the time limit, and stores routes, stops and
every bin left out with why; the scheduler's evening job and the REST call both come here."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog

from fleet.collection import selection, solver
from fleet.collection.forecasting import forecasts
from fleet.collection.matrix import matrix_provider
from fleet.collection.models import (CollectionSettings, DisposalSite, Fleet, Place, Plan, PlanRequest, PlanSource,
                                     PlanStatus, PlanSummary, RoutingProblem, Solution, TimeWindow,
                                     UnassignedReason, Vehicle, Visit)
from fleet.collection.plans_repository import PlanRepository
from fleet.collection.repository import SetupRepository
from fleet.collection.savings import compare, nearest_neighbour_m
from fleet.db import Database

log = structlog.get_logger(__name__)


@dataclass
class Kind:
    """One waste kind's problem: its trucks, the bins chosen and the bins of the fixed round."""

    waste_kind: str
    vehicles: list[Vehicle]
    problem: RoutingProblem
    choices: list[selection.Choice]       # in the problem's visit order
    round_bins: list[tuple[selection.Bin, int]]   # every bin of the kind with its litres


@dataclass
class Setting:
    """What planning read of the city, in one transaction."""

    settings: CollectionSettings
    zone: ZoneInfo
    midnight: datetime
    kinds: list[Kind]
    left_out: list[tuple[UUID, str, str | None]]
    must: int
    may: int


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)


def at(midnight: datetime, seconds: int) -> datetime:
    # Wall-clock seconds from the day's local midnight (a DST change that day shifts by an hour).
    return (midnight + timedelta(seconds=seconds)).astimezone(UTC)


def fleets_of(vehicles: list[Vehicle], depots: dict, sites: list[DisposalSite], now_s: int) -> tuple[Fleet, ...]:
    """`now_s`: now in seconds from the plan's local midnight. A plan for today starts its trucks
    now at the earliest (none before a shift start, none after its end): routes never begin in
    the past."""
    out = []
    for v in vehicles:
        depot = depots[v.depot_id]
        start_s, end_s = selection.seconds(v.shift_start), selection.seconds(v.shift_end)
        out.append(Fleet(
            key=str(v.id), depot=Place(str(depot.id), depot.lat, depot.lon), capacity_litres=v.capacity_litres,
            count=v.count, shift_start_s=min(max(start_s, now_s), end_s), shift_end_s=end_s,
            cost_per_km=v.cost_per_km, cost_per_hour=v.cost_per_hour,
            disposal_sites=tuple(Place(str(s.id), s.lat, s.lon) for s in sites if s.takes(v.waste_kind))))
    return tuple(out)


def visit_of(choice: selection.Choice, fleets: tuple[Fleet, ...], windows: list[TimeWindow], day: date,
             service_s: int) -> Visit | None:
    """The bin as the solver takes it; None when its time windows leave no time in any shift."""
    start = min(f.shift_start_s for f in fleets)
    end = max(f.shift_end_s for f in fleets)
    blocked = [(selection.seconds(w.starts), selection.seconds(w.ends))
               for w in windows if selection.applies(w, day, choice.bin)]
    allowed = selection.allowed(blocked, start, end, service_s) if blocked else ()
    if blocked and not allowed:
        return None
    cheapest = min(fleets, key=lambda f: f.cost_per_km)
    return Visit(Place(str(choice.bin.device_id), choice.bin.lat, choice.bin.lon), selection.litres(choice),
                 service_s, required=choice.required,
                 prize=0 if choice.required else selection.prize(choice, cheapest.cost_per_km,
                                                                 cheapest.cost_per_hour, service_s),
                 allowed=allowed)


async def read_setting(conn, tenant_id: UUID, day: date, waste_kind: str | None, *, now: datetime,
                       exclude: frozenset[UUID] = frozenset(),
                       keep: dict[UUID, tuple[bool, float]] | None = None) -> Setting:
    """Everything the plan needs, read on the city's side of the wall. A re-plan passes
    `exclude` (bins its done and skipped stops dealt with) and `keep` (its remaining stops: bin
    -> required, expected fill): those are planned whatever the forecast says now, and besides
    them only must-collect bins."""
    setup, plans = SetupRepository(conn), PlanRepository(conn)
    settings = await setup.settings(tenant_id)
    zone = ZoneInfo(await plans.timezone(tenant_id))
    midnight = local_midnight(day, zone)
    vehicles = await setup.vehicles(tenant_id, waste_kind)
    depots = {d.id: d for d in await setup.depots(tenant_id)}
    sites = await setup.sites(tenant_id)
    windows = await setup.windows(tenant_id)
    by_kind: dict[str, list[Vehicle]] = {}
    for v in vehicles:
        by_kind.setdefault(v.waste_kind, []).append(v)
    # Bins of a kind no truck collects are still looked at: an urgent one is listed, not dropped.
    kinds = [waste_kind] if waste_kind else sorted({*by_kind, *await plans.bin_kinds(tenant_id)})
    bins = [b for b in await plans.bins(tenant_id, kinds) if b.device_id not in exclude]
    alarmed = await plans.alarmed(tenant_id)
    next_collection = local_midnight(day + timedelta(days=2), zone)   # the end of the day after
    fills = {f.device_id: f for f in await forecasts(conn, tenant_id, until=next_collection, waste_kind=waste_kind,
                                                     now=now)}
    left_out: list[tuple[UUID, str, str | None]] = []
    out: list[Kind] = []
    must = may = 0
    for kind in kinds:
        kind_bins = [b for b in bins if b.waste_kind == kind]
        kind_vehicles = by_kind.get(kind, [])
        service_end = max((at(midnight, selection.seconds(v.shift_end)) for v in kind_vehicles),
                          default=midnight + timedelta(hours=24))
        chosen, missing = selection.choose(
            kind_bins, fills, alarmed, threshold=settings.threshold_percent,
            hours_to_next=selection.hours_between(now, next_collection),
            hours_to_spare=selection.hours_between(now, next_collection + timedelta(days=1)),
            hours_to_service=selection.hours_between(now, service_end))
        if keep is not None:
            chosen = _with_remaining(chosen, kind_bins, keep)
        left_out += missing
        must += sum(c.required for c in chosen)
        may += sum(not c.required for c in chosen)
        if not kind_vehicles:
            left_out += [(c.bin.device_id, UnassignedReason.NO_VEHICLE, f"no vehicle collects {kind}")
                         for c in chosen if c.required]
            continue
        fleets = fleets_of(kind_vehicles, depots, sites, math.ceil((now - midnight).total_seconds()))
        visits, kept = [], []
        for c in chosen:
            visit = visit_of(c, fleets, windows, day, settings.service_s)
            if visit is None:
                if c.required:
                    left_out.append((c.bin.device_id, UnassignedReason.OUTSIDE_SHIFT,
                                     "its time windows leave no time in any shift"))
                continue
            visits.append(visit)
            kept.append(c)
        litres = {c.bin.device_id: selection.litres(c) for c in chosen}
        round_bins = [(b, litres.get(b.device_id) or _round_litres(b, fills.get(b.device_id)))
                      for b in kind_bins if b.lat is not None and b.lon is not None]
        out.append(Kind(kind, kind_vehicles, RoutingProblem(fleets, tuple(visits), settings.unload_s), kept,
                        round_bins))
    return Setting(settings, zone, midnight, out, left_out, must, may)


def _with_remaining(chosen: list[selection.Choice], bins: list[selection.Bin],
                    keep: dict[UUID, tuple[bool, float]]) -> list[selection.Choice]:
    """A re-plan's choice: its remaining stops (required as they were, or more so now) and new
    must-collect bins; no new optional ones."""
    out, seen = [], set()
    for c in chosen:
        if c.bin.device_id in keep:
            required, _ = keep[c.bin.device_id]
            out.append(dataclasses.replace(c, required=c.required or required))
        elif c.required:
            out.append(c)
        seen.add(c.bin.device_id)
    for b in bins:
        if b.device_id in keep and b.device_id not in seen and b.lat is not None and b.lon is not None:
            required, fill = keep[b.device_id]
            out.append(selection.Choice(b, required, fill, "remaining"))
    return out


def _round_litres(b: selection.Bin, forecast) -> int:
    """A fixed round empties a bin whatever its fill: what it holds now, half full if unknown."""
    fill = forecast.fill_now if forecast is not None and forecast.fill_now is not None else 50.0
    return max(1, round(b.capacity_litres * fill / 100))


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
    """Each kind's problem solved in turn; the time limit is shared among the kinds with bins."""
    matrices = provider(setting.settings, routing_url)
    busy = [k for k in setting.kinds if k.problem.visits]
    share = max(1, time_limit_s // max(1, len(busy)))
    out = []
    for kind in setting.kinds:
        if kind.problem.visits:
            matrix = await matrices.matrix(tenant_id, solver.points(kind.problem))
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


async def build_plan(db: Database, tenant_id: UUID, request: PlanRequest, *, source: PlanSource,
                     created_by: UUID | None = None, replaces: UUID | None = None,
                     routing_url: str | None = None) -> Plan:
    """The plan for the request's date, solved and stored (status ready, or failed with the
    error). The evening's plan (source 'schedule') is built once per city, date and kind: a
    second call returns the first's."""
    now = datetime.now(UTC)
    waste_kind = str(request.waste_kind) if request.waste_kind else None
    async with db.tenant_tx(tenant_id) as conn:
        setting = await read_setting(conn, tenant_id, request.date, waste_kind, now=now)
        time_limit_s = request.time_limit_s or setting.settings.time_limit_s
        plans = PlanRepository(conn)
        plan_id = await plans.insert_plan(tenant_id, request.date, waste_kind, source, replaces, time_limit_s,
                                          created_by)
        if plan_id is None:
            plan_id = await plans.scheduled_plan(tenant_id, request.date, waste_kind)
            return await plans.plan(tenant_id, plan_id)
    return await solve_and_store(db, tenant_id, plan_id, setting, time_limit_s, routing_url, persist)


async def solve_and_store(db: Database, tenant_id: UUID, plan_id: UUID, setting: Setting, time_limit_s: int,
                          routing_url: str | None, store) -> Plan:
    """Solve outside any transaction (a search holds no connection), then store with `store`."""
    try:
        solved = await solve_kinds(tenant_id, setting, time_limit_s, routing_url)
        async with db.tenant_tx(tenant_id) as conn:
            await store(conn, tenant_id, plan_id, setting, solved)
    except Exception as exc:
        log.error("pickup plan failed", tenant_id=str(tenant_id), plan_id=str(plan_id), exc_info=True)
        async with db.tenant_tx(tenant_id) as conn:
            await PlanRepository(conn).finish_plan(tenant_id, plan_id, status=PlanStatus.FAILED,
                                                   error=f"{type(exc).__name__}: {exc}"[:2000])
    async with db.tenant_tx(tenant_id, readonly=True) as conn:
        return await PlanRepository(conn).plan(tenant_id, plan_id)
