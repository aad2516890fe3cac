"""The checks made before solving: which bins no truck of the problem could ever collect, and why."""

from __future__ import annotations

from collections.abc import Sequence

from fleet.collection.models import UnassignedReason
from fleet.collection.routing_problem import Fleet, Matrix, RoutingProblem, Visit

Window = tuple[int, int]


def service_windows(visit: Visit, fleet: Fleet) -> list[Window]:
    """The visit's allowed service starts within the fleet's shift (service must end in it too)."""
    latest = fleet.shift_end_s - visit.service_s
    allowed = visit.allowed or ((fleet.shift_start_s, latest),)
    return [(max(early, fleet.shift_start_s), min(late, latest))
            for early, late in allowed if max(early, fleet.shift_start_s) <= min(late, latest)]


def _reachable(visit_point: int, visit: Visit, fleet: Fleet, windows: Sequence[Window],
               start_point: int, end_point: int, duration: Sequence[Sequence[int]]) -> bool:
    """Can one truck of the fleet leave at the shift's start, serve the bin in one of its windows
    and be back at its depot by the shift's end?"""
    arrival = fleet.shift_start_s + duration[start_point][visit_point]
    for early, late in windows:
        begin = max(arrival, early)
        if begin <= late and begin + visit.service_s + duration[visit_point][end_point] <= fleet.shift_end_s:
            return True
    return False


def unservable(problem: RoutingProblem, matrix: Matrix, visit_points: Sequence[int],
               start_points: Sequence[int], end_points: Sequence[int]) -> dict[int, tuple[str, str]]:
    """Visit index -> (reason, detail) for every visit no fleet can take whatever the others do.
    The most basic reason wins: no truck at all, then size, then time, then distance."""
    out: dict[int, tuple[str, str]] = {}
    fleets = problem.fleets
    largest = max((f.capacity_litres for f in fleets), default=0)
    for i, visit in enumerate(problem.visits):
        if not fleets:
            out[i] = (UnassignedReason.NO_VEHICLE, "no truck in the plan")
            continue
        if visit.litres > largest:
            out[i] = (UnassignedReason.TOO_LARGE, f"{visit.litres} l, the largest truck carries {largest} l")
            continue
        # A truck already carrying waste can only take the bin if it may unload first.
        fits = [k for k, f in enumerate(fleets) if visit.litres <= f.capacity_litres
                and (f.disposal_sites or visit.litres <= f.capacity_litres - f.initial_litres)]
        if not fits:
            out[i] = (UnassignedReason.NO_DISPOSAL_SITE,
                      f"{visit.litres} l does not fit beside the load on board, and the trucks have "
                      "no disposal site to unload at")
            continue
        in_shift = {k: service_windows(visit, fleets[k]) for k in fits}
        if not any(in_shift.values()):
            out[i] = (UnassignedReason.OUTSIDE_SHIFT, "its allowed collection times miss every shift")
            continue
        if not any(_reachable(visit_points[i], visit, fleets[k], windows, start_points[k], end_points[k],
                              matrix.duration_s) for k, windows in in_shift.items() if windows):
            out[i] = (UnassignedReason.UNREACHABLE,
                      "a truck cannot get there and back to its depot within its shift")
    return out
