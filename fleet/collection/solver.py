"""The routing problem solved with PyVRP: capacities, reloads at disposal sites, shifts, time
windows and optional visits with prizes. Pure: no I/O, no database.

Interface (fleet.collection.planning and bench/routes call exactly these):
- `points(problem)`: every place of the problem in the order the matrix must follow.
- `solve(problem, matrix, time_limit_s=..., seed=...)`: a Solution; never drops a visit silently
  (left-out visits are in `Solution.unassigned` with a reason).
- `solve_elsewhere(...)`: the same in a worker process, so a 30-second search never holds an
  event loop (or the GIL) of the node serving devices and REST.

The model: a bin is a client whose waste is a pickup (litres); disposal sites are reload depots
(a truck unloads there, `unload_s` of service); each fleet is a vehicle type starting at its
depot (or, re-planning, where its trucks are now, with `initial_litres` on board) and ending at
its depot, working between `shift_start_s` and `shift_end_s`. A bin with one allowed window gets
it as its time window; one with several (a forbidden 08:00–09:00 splits a shift in two) becomes
a mutually exclusive client group of copies, one per window, of which exactly one (required
bins) or at most one (optional bins) is visited.

Costs are integers for PyVRP: a currency unit is 3,600,000 cost units, so `cost_per_km` becomes
`cost_per_km * 3600` a metre and `cost_per_hour` becomes `cost_per_hour * 1000` a second, both
exact to 1/3600 of a currency unit; every unit cost and prize is then divided by their greatest
common divisor (so 1 a km and 30 an hour become 3 a metre and 25 a second). `Visit.prize` is in
currency units, like the costs; `Solution.cost` is in currency units, travel only (no prizes).
"""

from __future__ import annotations

import math
import pickle
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvrp
from pyvrp.exceptions import PenaltyBoundWarning
from pyvrp.PenaltyManager import PenaltyParams

from fleet.collection.feasibility import unservable
from fleet.collection.models import UnassignedReason
from fleet.collection.routing_problem import Matrix, Place, RoutingProblem, Solution, SolvedRoute, SolvedStop

COST_UNITS = 3_600_000   # cost units per currency unit: exact for per-km and per-hour costs
# A left-out required bin, once the search may leave bins out, costs this many times what the
# costliest single bin could add to a route: reaching it from afar, and a trip to unload.
_DROP_FACTOR = 10
_MAX_PRIZE = 10**12


@dataclass(frozen=True, slots=True)
class _Layout:
    places: tuple[Place, ...]
    start: tuple[int, ...]           # point each fleet's trucks start from
    end: tuple[int, ...]             # point of each fleet's depot
    sites: tuple[tuple[int, ...], ...]
    visit: tuple[int, ...]           # point of each visit


def _layout(problem: RoutingProblem) -> _Layout:
    """Depots, start places and disposal sites first (once each, by key), then one point per bin."""
    places: list[Place] = []
    index: dict[str, int] = {}

    def point(place: Place) -> int:
        if place.key not in index:
            index[place.key] = len(places)
            places.append(place)
        return index[place.key]

    end = tuple(point(f.depot) for f in problem.fleets)
    start = tuple(point(f.start) if f.start is not None else end[k] for k, f in enumerate(problem.fleets))
    sites = tuple(tuple(point(s) for s in f.disposal_sites) for f in problem.fleets)
    visit = tuple(range(len(places), len(places) + len(problem.visits)))
    places.extend(v.place for v in problem.visits)
    return _Layout(tuple(places), start, end, sites, visit)


def points(problem: RoutingProblem) -> list[Place]:
    return list(_layout(problem).places)


@dataclass(frozen=True, slots=True)
class _Costs:
    distance: tuple[int, ...]   # per fleet, cost units a metre (after dividing by `divisor`)
    duration: tuple[int, ...]   # per fleet, cost units a second
    divisor: int                # cost units per PyVRP unit

    def prize(self, currency: int) -> int:
        return min(_MAX_PRIZE, currency * COST_UNITS // self.divisor)


def _costs(problem: RoutingProblem) -> _Costs:
    distance = [round(f.cost_per_km * COST_UNITS / 1000) for f in problem.fleets]
    duration = [round(f.cost_per_hour * COST_UNITS / 3600) for f in problem.fleets]
    # A fleet that costs nothing still drives short routes: a metre costs it one unit.
    distance = [d if d or t else 1 for d, t in zip(distance, duration, strict=True)]
    prizes = [v.prize * COST_UNITS for v in problem.visits if v.prize > 0]
    divisor = math.gcd(*distance, *duration, *prizes) or 1
    return _Costs(tuple(d // divisor for d in distance), tuple(t // divisor for t in duration), divisor)


def _drop_prize(problem: RoutingProblem, matrix: Matrix, costs: _Costs) -> int:
    longest = max((max(row) for row in matrix.distance_m), default=0)
    slowest = max((max(row) for row in matrix.duration_s), default=0)
    service = max((v.service_s for v in problem.visits), default=0)
    worst = max(d * 4 * longest + t * (4 * slowest + service + problem.unload_s)
                for d, t in zip(costs.distance, costs.duration, strict=True))
    optional = max((costs.prize(v.prize) for v in problem.visits), default=0)
    return min(_MAX_PRIZE, _DROP_FACTOR * (worst + optional) + 1)


def _data(problem: RoutingProblem, matrix: Matrix, layout: _Layout, costs: _Costs, kept: list[int],
          drop_prize: int | None):
    """PyVRP's ProblemData, and which visit each client is. `drop_prize` None: required bins must
    be visited; otherwise they may be left out at that price."""
    locations = [pyvrp.Location(x=p.lon, y=p.lat, name=p.key) for p in layout.places]
    depots: list[pyvrp.Depot] = []
    depot_place: list[Place] = []
    plain: dict[int, int] = {}
    unloading: dict[int, int] = {}

    def depot(point: int, registry: dict[int, int], service_s: int) -> int:
        if point not in registry:
            registry[point] = len(depots)
            depots.append(pyvrp.Depot(location=point, service_duration=service_s))
            depot_place.append(layout.places[point])
        return registry[point]

    vehicle_types = []
    for k, fleet in enumerate(problem.fleets):
        vehicle_types.append(pyvrp.VehicleType(
            num_available=fleet.count, capacity=[fleet.capacity_litres],
            start_depot=depot(layout.start[k], plain, 0), end_depot=depot(layout.end[k], plain, 0),
            tw_early=fleet.shift_start_s, tw_late=fleet.shift_end_s,
            unit_distance_cost=costs.distance[k], unit_duration_cost=costs.duration[k],
            initial_load=[fleet.initial_litres],
            reload_depots=[depot(s, unloading, problem.unload_s) for s in layout.sites[k]],
            name=fleet.key))

    clients: list[pyvrp.Client] = []
    groups: list[pyvrp.ClientGroup] = []
    client_visit: list[int] = []
    for i in kept:
        visit = problem.visits[i]
        required = visit.required and drop_prize is None
        prize = drop_prize if visit.required and drop_prize is not None else costs.prize(visit.prize)
        windows = [(early, late) for early, late in visit.allowed if early <= late] or [(0, np.iinfo(np.int64).max)]
        group = None
        if len(windows) > 1:
            group = len(groups)
            groups.append(pyvrp.ClientGroup(required=required))
        for early, late in windows:
            if group is not None:
                groups[group].add_client(len(clients))
            clients.append(pyvrp.Client(
                location=layout.visit[i], pickup=[visit.litres], service_duration=visit.service_s,
                tw_early=early, tw_late=late, prize=0 if required else prize,
                required=required and group is None, group=group, name=visit.place.key))
            client_visit.append(i)

    distance = np.asarray(matrix.distance_m, dtype=np.int64)
    duration = np.asarray(matrix.duration_s, dtype=np.int64)
    data = pyvrp.ProblemData(locations, clients, depots, vehicle_types, [distance], [duration], groups)
    return data, client_visit, depot_place


# What CostEvaluator.cost gives an infeasible solution (PyVRP's Cost is a 64-bit integer).
_INFEASIBLE = np.iinfo(np.int64).max


class _Clock:
    """PyVRP's stopping criterion for one pass, called before each iteration: the solve's own
    deadline (PyVRP's MaxRuntime would start only once its first descent is over, after the
    set-up), an optional iteration cap, and for the first pass the point where it gives up on a
    plan visiting every required bin (a time, or with an iteration cap an iteration count) so
    that the second pass gets the rest of the limit."""

    def __init__(self, deadline: float, max_iterations: int | None, give_up: float | None = None):
        self.deadline, self.max_iterations, self.give_up = deadline, max_iterations, give_up
        self.iterations = 0
        self.gave_up = False

    def __call__(self, best_cost: int) -> bool:
        if time.monotonic() >= self.deadline:
            return True
        if self.max_iterations is not None and self.iterations >= self.max_iterations:
            return True
        if self.give_up is not None and best_cost >= _INFEASIBLE:
            reached = self.iterations if self.max_iterations is not None else time.monotonic()
            if reached >= self.give_up:
                self.gave_up = True
                return True
        self.iterations += 1
        return False


def _search(data, clock: _Clock, seed: int, max_penalty: float | None = None):
    params = pyvrp.SolveParams() if max_penalty is None else pyvrp.SolveParams(
        penalty=PenaltyParams(max_penalty=max_penalty))
    with warnings.catch_warnings():
        # An over-full day has no plan visiting every bin: that is what the second search is for.
        warnings.simplefilter("ignore", PenaltyBoundWarning)
        return pyvrp.solve(data, stop=clock, seed=seed, collect_stats=False, display=False,
                           params=params)


def _routes(problem: RoutingProblem, best, client_visit: list[int],
            depot_place: list[Place]) -> tuple[list[SolvedRoute], set[int]]:
    routes: list[SolvedRoute] = []
    visited: set[int] = set()
    numbers = [0] * len(problem.fleets)
    for route in best.routes():
        k = route.vehicle_type()
        fleet = problem.fleets[k]
        load = fleet.initial_litres
        stops: list[SolvedStop] = []
        schedule = route.schedule()
        for activity in schedule[1:-1]:   # between leaving the start and reaching the end depot
            if activity.is_client():
                i = client_visit[activity.idx]
                visited.add(i)
                load += problem.visits[i].litres
                stops.append(SolvedStop(problem.visits[i].place, i, activity.start_time, load))
            elif activity.is_depot():
                load = 0
                stops.append(SolvedStop(depot_place[activity.idx], None, activity.start_time, 0))
        routes.append(SolvedRoute(fleet=k, vehicle_number=numbers[k], stops=tuple(stops),
                                  start_s=route.start_time(), end_s=route.end_time(),
                                  distance_m=route.distance(), duration_s=route.duration()))
        numbers[k] += 1
    return routes, visited


def solve(problem: RoutingProblem, matrix: Matrix, *, time_limit_s: float, seed: int = 0,
          max_iterations: int | None = None) -> Solution:
    """Best routes found within `time_limit_s` of wall clock, set-up and both passes included
    (PyVRP cannot stop inside its first descent nor inside an iteration: those may overrun it),
    and within `max_iterations` (which makes a run repeat exactly for a seed whatever the
    machine's speed). If no plan visiting every required bin is found by half the time left (or
    half the iterations), the search gives up on that and runs again with the required bins made
    optional at a prize far above any detour, for the rest; the ones it still leaves out are
    reported `no_capacity`."""
    started = time.monotonic()
    deadline = started + time_limit_s
    layout = _layout(problem)
    if len(matrix.distance_m) != len(layout.places):
        raise ValueError(f"the matrix has {len(matrix.distance_m)} points, the problem {len(layout.places)}")
    left_out = unservable(problem, matrix, layout.visit, layout.start, layout.end)
    kept = [i for i in range(len(problem.visits)) if i not in left_out]
    unassigned = [(i, str(reason), detail) for i, (reason, detail) in sorted(left_out.items())
                  if problem.visits[i].required]
    if not kept:
        return Solution(routes=(), unassigned=tuple(unassigned), cost=0.0, feasible=True, runtime_s=0.0)

    costs = _costs(problem)
    data, client_visit, depot_place = _data(problem, matrix, layout, costs, kept, None)
    must_visit = any(problem.visits[i].required for i in kept)
    if not must_visit:
        give_up = None
    elif max_iterations is not None:
        give_up = max_iterations // 2
    else:
        give_up = time.monotonic() + (deadline - time.monotonic()) / 2
    clock = _Clock(deadline, max_iterations, give_up)
    result = _search(data, clock, seed)
    iterations = result.num_iterations
    if not result.best.is_feasible() and must_visit:
        drop_prize = _drop_prize(problem, matrix, costs)
        data, client_visit, depot_place = _data(problem, matrix, layout, costs, kept, drop_prize)
        rest = None if max_iterations is None else max(0, max_iterations - iterations)
        # A first descent that overran the limit still leaves the second pass a tenth of it: a
        # plan that leaves bins out beats one the trucks cannot drive.
        late = max(deadline, time.monotonic() + time_limit_s / 10)
        # A violation may cost as much as leaving a bin out: with PyVRP's default ceiling (1e5 a
        # second late or a litre over) a search whose prizes are this high stays infeasible for
        # thousands of iterations (measured: 2,000 bins, 6 trucks for 12 trucks' work).
        result = _search(data, _Clock(late, rest), seed, max_penalty=drop_prize)
        iterations += result.num_iterations

    routes, visited = _routes(problem, result.best, client_visit, depot_place)
    unassigned += [(i, str(UnassignedReason.NO_CAPACITY), "the trucks' capacity and shift hours are used up")
                   for i in kept if problem.visits[i].required and i not in visited]
    cost = sum(r.distance_m / 1000 * problem.fleets[r.fleet].cost_per_km
               + r.duration_s / 3600 * problem.fleets[r.fleet].cost_per_hour for r in routes)
    return Solution(routes=tuple(routes), unassigned=tuple(sorted(unassigned)), cost=cost,
                    feasible=result.best.is_feasible(), runtime_s=time.monotonic() - started,
                    iterations=iterations)


async def solve_elsewhere(problem: RoutingProblem, matrix: Matrix, *, time_limit_s: float,
                          seed: int = 0) -> Solution:
    """`solve` in a fresh Python process (`python -m fleet.collection.solver`, pickles over its
    stdin and stdout), so the search holds neither this event loop nor its GIL. The process lives
    exactly as long as the solve: cancelling the caller kills it, and nothing is left to shut
    down with the node."""
    import asyncio
    import os

    # The child finds this very `fleet` first, whether installed or run from a checkout.
    started = time.monotonic()   # the child's start counts against the limit too
    here = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet.collection.solver", env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        request = pickle.dumps((problem, matrix, time_limit_s, seed, started), protocol=pickle.HIGHEST_PROTOCOL)
        out, err = await process.communicate(request)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the route solver's process failed ({process.returncode}): "
                           f"{err.decode(errors='replace')[-2000:]}")
    return pickle.loads(out)


def _serve_one() -> None:
    problem, matrix, time_limit_s, seed, started = pickle.loads(sys.stdin.buffer.read())
    # Linux's monotonic clock is the machine's, the same in parent and child: the half second
    # this process took to start and import PyVRP comes off the search.
    left = time_limit_s - (time.monotonic() - started)
    solution = solve(problem, matrix, time_limit_s=max(0.0, left), seed=seed)
    sys.stdout.buffer.write(pickle.dumps(solution, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    _serve_one()
