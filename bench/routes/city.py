"""The city-scale case: 2,000 bins around Seoul City Hall, 3 disposal sites, 12 trucks from one
depot, a school-street hour (no collection 08:00-09:00) for a tenth of the bins and a morning
window for a market street; solved by the planner's solver beside a nearest-neighbour round."""

from __future__ import annotations

import random
import time

from fleet.collection.matrix import HaversineMatrix
from fleet.collection.routing_problem import Fleet, Matrix, Place, RoutingProblem, Visit
from fleet.collection.solver import points, solve

H = 3600
SHIFT = (6 * H, 16 * H)
SERVICE_S, UNLOAD_S = 45, 900
CAPACITY, TRUCKS = 16_000, 12
CENTRE = (37.5665, 126.9780)


def city(bins: int, seed: int, trucks: int = TRUCKS) -> RoutingProblem:
    rng = random.Random(seed)
    spread = 0.06   # about +-6.5 km north-south, +-5.3 km east-west

    def somewhere(key: str) -> Place:
        return Place(key, CENTRE[0] + rng.uniform(-spread, spread), CENTRE[1] + rng.uniform(-spread, spread))

    depot = Place("depot", CENTRE[0] - 0.05, CENTRE[1] + 0.05)
    sites = tuple(Place(f"site-{n}", CENTRE[0] + dlat, CENTRE[1] + dlon)
                  for n, (dlat, dlon) in enumerate([(0.05, -0.05), (-0.055, -0.04), (0.04, 0.055)]))
    visits = []
    for n in range(bins):
        draw = rng.random()
        allowed: tuple[tuple[int, int], ...] = ()
        if draw < 0.10:
            allowed = ((0, 8 * H), (9 * H, 24 * H))     # school street
        elif draw < 0.13:
            allowed = ((6 * H, 10 * H),)                 # market street, before it opens
        visits.append(Visit(somewhere(f"bin-{n}"), litres=rng.choice([120, 240, 660, 1100]) * 8 // 10,
                            service_s=SERVICE_S, required=rng.random() < 0.8, prize=3, allowed=allowed))
    fleet = Fleet("trucks", depot, CAPACITY, trucks, *SHIFT, cost_per_km=1.0, cost_per_hour=30.0,
                  disposal_sites=sites)
    return RoutingProblem((fleet,), tuple(visits), unload_s=UNLOAD_S)


def nearest_neighbour(problem: RoutingProblem, matrix: Matrix) -> tuple[float, int, int, int]:
    """Each truck in turn drives to the nearest bin it can still serve in time (waiting for a
    window to open), unloads at the nearest site when the next bin would not fit, and goes home
    when no bin is left that lets it be back by the shift's end. Every bin, optional or not, is
    on its round. Returns cost, bins, required bins missed, trucks used."""
    fleet = problem.fleets[0]
    d, t = matrix.distance_m, matrix.duration_s
    depot, sites = 0, [1 + n for n in range(len(fleet.disposal_sites))]
    first = 1 + len(sites)
    left = set(range(len(problem.visits)))
    metres = seconds = visited = used = 0
    for _ in range(fleet.count):
        if not left:
            break
        at, clock, load = depot, fleet.shift_start_s, 0
        while True:
            best = None
            for i in left:
                visit, p = problem.visits[i], first + i
                if load + visit.litres > fleet.capacity_litres:
                    continue
                begin = _begin(clock + t[at][p], visit)
                if begin is not None and begin + visit.service_s + t[p][depot] <= fleet.shift_end_s:
                    if best is None or d[at][p] < best[0]:
                        best = (d[at][p], i, begin)
            if best is None and load > 0 and left:
                site = min(sites, key=lambda s: d[at][s])
                arrive = clock + t[at][site] + problem.unload_s
                if arrive + t[site][depot] < fleet.shift_end_s and clock + t[at][site] > clock:
                    metres, clock, at, load = metres + d[at][site], arrive, site, 0
                    continue
            if best is None:
                break
            _, i, begin = best
            p = first + i
            metres += d[at][p]
            at, clock, load = p, begin + problem.visits[i].service_s, load + problem.visits[i].litres
            left.discard(i)
            visited += 1
        metres += d[at][depot]
        clock += t[at][depot]
        seconds += clock - fleet.shift_start_s
        used += 1
    cost = metres / 1000 * fleet.cost_per_km + seconds / 3600 * fleet.cost_per_hour
    return cost, visited, sum(problem.visits[i].required for i in left), used


def _begin(arrival: int, visit: Visit) -> int | None:
    for early, late in visit.allowed or ((0, 10**9),):
        if arrival <= late:
            return max(arrival, early)
    return None


def run_city(bins: int, seconds: float, seed: int, trucks: int = TRUCKS) -> int:
    """`trucks` below what the day needs makes it over-full: the solver's second pass then runs."""
    problem = city(bins, seed, trucks)
    started = time.monotonic()
    matrix = HaversineMatrix(1.35, 22.0).compute(points(problem))
    matrix_s = time.monotonic() - started
    started = time.monotonic()
    solution = solve(problem, matrix, time_limit_s=seconds, seed=seed)
    solve_s = time.monotonic() - started
    started = time.monotonic()
    nn_cost, nn_bins, nn_missed, nn_trucks = nearest_neighbour(problem, matrix)
    nn_s = time.monotonic() - started
    required = sum(v.required for v in problem.visits)
    served = sum(s.visit is not None for r in solution.routes for s in r.stops)
    reloads = sum(s.visit is None for r in solution.routes for s in r.stops)
    km = sum(r.distance_m for r in solution.routes) / 1000
    print(f"city: {bins} bins ({required} required), {len(problem.fleets[0].disposal_sites)} disposal sites, "
          f"{problem.fleets[0].count} trucks of {CAPACITY} l, shift 06:00-16:00; matrix {matrix_s:.1f} s")
    print(f"pyvrp  cost {solution.cost:.1f}  {km:.1f} km  bins {served}  reloads {reloads}  "
          f"trucks {len(solution.routes)}  required left out {len(solution.unassigned)}  "
          f"feasible {solution.feasible}  solve {solve_s:.1f} s ({solution.iterations} iterations)")
    print(f"nearest-neighbour  cost {nn_cost:.1f}  bins {nn_bins}  trucks {nn_trucks}  "
          f"required left out {nn_missed}  {nn_s:.1f} s")
    return 0
