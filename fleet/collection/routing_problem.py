"""The routing problem as the solver (fleet.collection.solver) takes it and gives its solution:
plain dataclasses in seconds and metres from the start of the plan's day, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Place:
    """Anything the solver routes between; `key` is what the caller knows it by (an id)."""

    key: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Visit:
    """A bin to empty. `allowed` lists the windows (seconds from the plan day's local midnight)
    in which service may start; empty means any time in the shift. `required` bins must be
    visited; the others only when their `prize` outweighs the detour."""

    place: Place
    litres: int
    service_s: int
    required: bool = True
    prize: int = 0
    allowed: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Fleet:
    """`count` alike trucks: where they start and end, what they carry, when they work."""

    key: str
    depot: Place
    capacity_litres: int
    count: int
    shift_start_s: int
    shift_end_s: int
    cost_per_km: float = 1.0
    cost_per_hour: float = 0.0
    # Where they may unload mid-shift; empty: no reloads.
    disposal_sites: tuple[Place, ...] = ()
    # Already on the road (a re-plan): where each truck is now, since when, carrying what.
    start: Place | None = None
    initial_litres: int = 0


@dataclass(frozen=True, slots=True)
class Matrix:
    """Distances (m) and durations (s) between points, both square, integers, indexed as the
    points given to the matrix provider."""

    distance_m: list[list[int]]
    duration_s: list[list[int]]


@dataclass(frozen=True, slots=True)
class RoutingProblem:
    fleets: tuple[Fleet, ...]
    visits: tuple[Visit, ...]
    unload_s: int = 0


@dataclass(frozen=True, slots=True)
class SolvedStop:
    """A stop in driving order: a bin (`visit` is its index in the problem's visits) or a
    disposal site (`visit` None, `place` the site)."""

    place: Place
    visit: int | None
    arrival_s: int
    load_after: int


@dataclass(frozen=True, slots=True)
class SolvedRoute:
    fleet: int            # index into the problem's fleets
    vehicle_number: int   # which of the fleet's trucks
    stops: tuple[SolvedStop, ...]
    start_s: int
    end_s: int
    distance_m: int
    duration_s: int


@dataclass(frozen=True, slots=True)
class Solution:
    routes: tuple[SolvedRoute, ...]
    # Visits left out (indexes), each with why (an UnassignedReason value) and a detail.
    unassigned: tuple[tuple[int, str, str], ...]
    cost: float
    feasible: bool
    runtime_s: float
    iterations: int = 0
