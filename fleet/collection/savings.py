"""What a plan saves against the fixed round: every bin of the kinds planned emptied every
`round_days` days, whatever its fill. Pure: no I/O.

The fixed round's day is its share of the round: `bins / round_days` stops, and the km of a
nearest-neighbour tour of every bin (one truck from the depot, unloading at the nearest disposal
site whenever the next bin would not fit, back to the depot), divided by `round_days`. Nearest
neighbour is what a round drawn by hand comes close to; it overstates an optimised round by
some 20 %, which docs/collection.md says beside the figure.
"""

from __future__ import annotations

from collections.abc import Sequence


def nearest_neighbour_m(distance: Sequence[Sequence[int]], depot: int, sites: Sequence[int],
                        bins: Sequence[int], litres: Sequence[int], capacity: int) -> int:
    """Metres of a nearest-neighbour tour from `depot` through every point of `bins` (each
    holding `litres`), unloading at the nearest of `sites` when full (none: never), back to
    `depot`."""
    left = set(range(len(bins)))
    here, load, metres = depot, 0, 0
    while left:
        nearest = min(left, key=lambda i: distance[here][bins[i]])
        if sites and load and load + litres[nearest] > capacity:
            site = min(sites, key=lambda s: distance[here][s])
            metres += distance[here][site]
            here, load = site, 0
            continue
        metres += distance[here][bins[nearest]]
        here = bins[nearest]
        load += litres[nearest]
        left.remove(nearest)
    if sites and load:
        site = min(sites, key=lambda s: distance[here][s])
        metres += distance[here][site]
        here = site
    return metres + distance[here][depot]


def compare(*, bins: int, round_days: int, round_m: int, stops: int, plan_m: float) -> dict[str, float]:
    fixed_stops = bins / round_days
    fixed_km = round_m / 1000 / round_days
    plan_km = plan_m / 1000
    return {"fixed_round_stops": round(fixed_stops, 1), "fixed_round_km": round(fixed_km, 2),
            "stops_saved": round(fixed_stops - stops, 1), "km_saved": round(fixed_km - plan_km, 2)}
