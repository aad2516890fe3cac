"""The route solver on small towns: reloads, bins that cannot fit, time windows, optional bins,
a re-plan from the road, repeatability, and the worker process."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fleet.collection.routing_problem import Fleet, Matrix, Place, RoutingProblem, Solution, Visit
from fleet.collection.solver import points, solve, solve_elsewhere
from fleet.workorders.routing import haversine_m

H = 3600
DEPOT = Place("depot", 37.5600, 126.9700)
SITE = Place("site", 37.5700, 126.9800)


def matrix(problem: RoutingProblem) -> Matrix:
    places = points(problem)
    distance = [[round(haversine_m((a.lat, a.lon), (b.lat, b.lon)) * 1.35) for b in places] for a in places]
    return Matrix(distance, [[round(d / (22 / 3.6)) for d in row] for row in distance])


def bin_at(n: int, litres: int = 400, **kwargs) -> Visit:
    return Visit(Place(f"bin-{n}", 37.5600 + 0.002 * n, 126.9700 + 0.001 * (n % 4)), litres=litres,
                 service_s=60, **kwargs)


def fleet(capacity: int = 1000, count: int = 1, sites: tuple[Place, ...] = (SITE,), start: int = 6 * H,
          end: int = 14 * H, at: Place | None = None, **kwargs) -> Fleet:
    return Fleet("trucks", DEPOT, capacity, count, start, end, 1.0, 30.0, sites, start=at, **kwargs)


def run(problem: RoutingProblem, **kwargs) -> Solution:
    return solve(problem, matrix(problem), time_limit_s=1, **kwargs)


def visited(solution: Solution) -> list[int]:
    return sorted(s.visit for r in solution.routes for s in r.stops if s.visit is not None)


def test_a_truck_unloads_mid_route_when_full():
    problem = RoutingProblem((fleet(),), tuple(bin_at(n) for n in range(6)), unload_s=600)
    solution = run(problem)
    assert solution.feasible and solution.unassigned == ()
    assert visited(solution) == list(range(6))
    [route] = solution.routes
    unloads = [s for s in route.stops if s.visit is None]
    assert len(unloads) >= 2 and all(s.place == SITE and s.load_after == 0 for s in unloads)
    assert all(s.load_after <= 1000 for s in route.stops)
    # Loads add up between unloads; arrivals go forward, the unload taking its 10 minutes.
    load = 0
    for before, stop in zip((None, *route.stops), route.stops, strict=False):
        load = 0 if stop.visit is None else load + 400
        assert stop.load_after == load
        if before is not None:
            assert stop.arrival_s >= before.arrival_s + (600 if before.visit is None else 60)
    assert route.start_s >= 6 * H and route.end_s <= 14 * H and route.distance_m > 0 and route.duration_s > 0


def test_bins_that_cannot_fit_are_listed_with_their_reason():
    far = Visit(Place("far", 38.9, 128.9), litres=100, service_s=60)
    problem = RoutingProblem((fleet(start=6 * H, end=8 * H),), (
        bin_at(1, litres=5000),                                   # bigger than any truck
        bin_at(2, allowed=((0, 5 * H),)),                          # only before the shift
        far,                                                       # ~200 km away, a 2-hour shift
        bin_at(3), bin_at(4), bin_at(5)), unload_s=600)
    solution = run(problem)
    reasons = {i: reason for i, reason, _ in solution.unassigned}
    assert reasons == {0: "too_large", 1: "outside_shift", 2: "unreachable"}
    assert visited(solution) == [3, 4, 5]
    assert all(detail for _, _, detail in solution.unassigned)
    # No truck at all: every required bin says so; an optional one is simply not visited.
    solution = run(RoutingProblem((), (bin_at(1), bin_at(2, required=False, prize=5))))
    assert solution.routes == () and [(i, r) for i, r, _ in solution.unassigned] == [(0, "no_vehicle")]


def test_no_disposal_site_and_no_capacity():
    # Already carrying 800 l with nowhere to unload: a 400 l bin cannot be taken at all.
    solution = run(RoutingProblem((fleet(sites=(), initial_litres=800),), (bin_at(1),)))
    assert [(i, r) for i, r, _ in solution.unassigned] == [(0, "no_disposal_site")]
    # Three 400 l bins, one 1000 l truck, nowhere to unload: one bin is left for lack of room.
    solution = run(RoutingProblem((fleet(sites=()),), tuple(bin_at(n) for n in range(3))))
    assert solution.feasible
    assert [r for _, r, _ in solution.unassigned] == ["no_capacity"]
    assert len(visited(solution)) == 2


def test_time_windows_are_honoured_including_a_forbidden_hour():
    school_street = ((0, 8 * H), (9 * H, 24 * H))     # no collection 08:00-09:00
    problem = RoutingProblem((fleet(start=8 * H, end=12 * H),), (
        bin_at(1, allowed=school_street), bin_at(2, allowed=((10 * H, 11 * H),)), bin_at(3)))
    solution = run(problem)
    assert solution.unassigned == () and visited(solution) == [0, 1, 2]
    arrival = {s.visit: s.arrival_s for r in solution.routes for s in r.stops if s.visit is not None}
    assert not 8 * H <= arrival[0] < 9 * H
    assert 10 * H <= arrival[1] <= 11 * H
    # An optional bin in the school street follows the same rule.
    problem = RoutingProblem((fleet(start=8 * H, end=12 * H),), (
        bin_at(1, allowed=school_street, required=False, prize=1000),))
    solution = run(problem)
    [stop] = solution.routes[0].stops
    assert stop.arrival_s >= 9 * H


def test_optional_bins_are_taken_only_when_cheap():
    near = Visit(Place("near", 37.5605, 126.9702), litres=100, service_s=60, required=False, prize=50)
    far = Visit(Place("far", 37.7000, 127.1500), litres=100, service_s=60, required=False, prize=1)
    problem = RoutingProblem((fleet(),), (bin_at(1), near, far))
    solution = run(problem)
    assert visited(solution) == [0, 1]
    assert solution.unassigned == ()    # an optional bin left out is no failure


def test_a_replan_starts_where_the_truck_is_with_its_load():
    on_the_road = Place("truck-now", 37.5800, 126.9900)
    problem = RoutingProblem((fleet(start=10 * H, end=14 * H, at=on_the_road, initial_litres=900),),
                             (bin_at(1), bin_at(2)), unload_s=600)
    solution = run(problem)
    [route] = solution.routes
    assert route.start_s >= 10 * H
    first = route.stops[0]
    assert first.visit is None and first.place == SITE and first.load_after == 0   # unload first
    assert visited(solution) == [0, 1]


def test_a_seed_repeats_the_same_plan():
    problem = RoutingProblem((fleet(count=3),), tuple(bin_at(n) for n in range(12)), unload_s=600)
    first = solve(problem, matrix(problem), time_limit_s=30, seed=7, max_iterations=300)
    again = solve(problem, matrix(problem), time_limit_s=30, seed=7, max_iterations=300)
    assert first.routes == again.routes and first.cost == again.cost


async def test_the_search_runs_in_its_own_process():
    problem = RoutingProblem((fleet(),), tuple(bin_at(n) for n in range(4)), unload_s=600)
    solution = await solve_elsewhere(problem, matrix(problem), time_limit_s=1, seed=1)
    assert isinstance(solution, Solution) and visited(solution) == [0, 1, 2, 3]


def solver_processes() -> list[int]:
    """This process's children running the solver (from /proc: no mocks, no extra dependency)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"fleet.collection.solver" in cmdline:
            children.append(int(entry.name))
    return children


async def test_cancelling_a_solve_ends_its_process():
    problem = RoutingProblem((fleet(count=3),), tuple(bin_at(n) for n in range(30)), unload_s=600)
    task = asyncio.create_task(solve_elsewhere(problem, matrix(problem), time_limit_s=60))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if solver_processes():
            break
    assert solver_processes()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert solver_processes() == []


def test_an_over_full_day_shares_one_budget_between_both_passes():
    # No plan visits all three bins: the first pass gives up halfway, the second (bins optional
    # at a high prize, violations as dear) gets the rest, not a budget of its own.
    problem = RoutingProblem((fleet(sites=()),), tuple(bin_at(n) for n in range(3)))
    first = solve(problem, matrix(problem), time_limit_s=30, seed=3, max_iterations=200)
    assert [r for _, r, _ in first.unassigned] == ["no_capacity"] and first.feasible
    assert 0 < first.iterations <= 200
    again = solve(problem, matrix(problem), time_limit_s=30, seed=3, max_iterations=200)
    assert again.routes == first.routes and again.iterations == first.iterations


def test_the_clock_stops_at_the_solve_deadline_and_gives_up_on_an_infeasible_first_pass():
    import time

    from fleet.collection.solver import _INFEASIBLE, _Clock

    past = _Clock(time.monotonic() - 1, None)
    assert past(0) is True                     # set-up already used the limit: no iteration
    counted = _Clock(time.monotonic() + 3600, 5, give_up=2)
    assert [counted(0) for _ in range(6)] == [False] * 5 + [True]   # feasible: the whole cap
    assert not counted.gave_up
    hopeless = _Clock(time.monotonic() + 3600, 5, give_up=2)
    assert [hopeless(_INFEASIBLE) for _ in range(3)] == [False, False, True] and hopeless.gave_up
    timed = _Clock(time.monotonic() + 3600, None, give_up=time.monotonic() - 1)
    assert timed(_INFEASIBLE) is True and timed(0) is False
