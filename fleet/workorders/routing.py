"""A crew's day in driving order: nearest neighbour, then 2-opt, on great-circle distances.

A crew has a handful to a few dozen stops; for one vehicle without time windows this gives a
route within a few percent of optimal in microseconds, where a VRP solver would add a heavy
dependency and seconds of search for no visible gain. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fleet.registry.repository import EARTH_RADIUS_M


Point = tuple[float, float]  # (lat, lon) in degrees


def haversine_m(a: Point, b: Point) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def path_length(start: Point | None, stops: Sequence[Point], order: Sequence[int]) -> float:
    points = ([start] if start is not None else []) + [stops[i] for i in order]
    return sum(haversine_m(points[i], points[i + 1]) for i in range(len(points) - 1))


def driving_order(start: Point | None, stops: Sequence[Point]) -> list[int]:
    """Indexes of `stops` in a short open path from `start` (or from the first stop when None)."""
    if len(stops) < 2:
        return list(range(len(stops)))
    remaining = set(range(len(stops)))
    here = start if start is not None else stops[0]
    order: list[int] = []
    while remaining:
        nearest = min(remaining, key=lambda i: (haversine_m(here, stops[i]), i))
        order.append(nearest)
        remaining.remove(nearest)
        here = stops[nearest]
    return _two_opt(start, stops, order)


def _two_opt(start: Point | None, stops: Sequence[Point], order: list[int]) -> list[int]:
    """Reverse any stretch of the path that shortens it, until none does. The path is open and
    its start fixed (the crew's position, or the first stop when there is none)."""
    first = 0 if start is not None else 1
    best = path_length(start, stops, order)
    improved = True
    while improved:
        improved = False
        for i in range(first, len(order) - 1):
            for j in range(i + 1, len(order)):
                candidate = order[:i] + order[i:j + 1][::-1] + order[j + 1:]
                length = path_length(start, stops, candidate)
                if length < best - 1e-6:
                    order, best, improved = candidate, length, True
    return order
