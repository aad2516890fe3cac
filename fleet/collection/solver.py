"""The routing problem solved with PyVRP: capacities, reloads at disposal sites, shifts, time
windows and optional visits with prizes. Pure: no I/O, no database.

Interface (fleet.collection.planning and bench/routes call exactly these):
- `points(problem)`: every place of the problem in the order the matrix must follow.
- `solve(problem, matrix, time_limit_s=..., seed=...)`: a Solution; never drops a visit silently
  (left-out visits are in `Solution.unassigned` with a reason).
- `solve_elsewhere(...)`: the same in a worker process, so a 30-second search never holds an
  event loop (or the GIL) of the node serving devices and REST.
"""

from __future__ import annotations

from fleet.collection.models import Matrix, Place, RoutingProblem, Solution


def points(problem: RoutingProblem) -> list[Place]:
    raise NotImplementedError  # issue 14, solver branch


def solve(problem: RoutingProblem, matrix: Matrix, *, time_limit_s: float, seed: int = 0) -> Solution:
    raise NotImplementedError  # issue 14, solver branch


async def solve_elsewhere(problem: RoutingProblem, matrix: Matrix, *, time_limit_s: float,
                          seed: int = 0) -> Solution:
    raise NotImplementedError  # issue 14, solver branch
