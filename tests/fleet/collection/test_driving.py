"""The pure parts of driving a route: the km a day's stops add up to."""

from __future__ import annotations

import pytest

from fleet.collection.driving import driven_km
from fleet.workorders.routing import haversine_m

DEPOT, A, B = (37.56, 126.97), (37.57, 126.97), (37.58, 126.97)


def test_km_run_from_the_depot_along_the_stops_done_in_order():
    leg = haversine_m(DEPOT, A) / 1000
    assert driven_km(DEPOT, [], 1.35, back_to_depot=True) == 0
    assert driven_km(DEPOT, [A], 1.0, back_to_depot=False) == pytest.approx(leg, abs=0.001)
    # Back to the depot once the route is over; the road factor stretches every leg.
    assert driven_km(DEPOT, [A, B], 1.35, back_to_depot=True) == pytest.approx(4 * leg * 1.35, abs=0.002)
    # Done out of the planned order: the km are those driven.
    assert driven_km(DEPOT, [B, A], 1.0, back_to_depot=False) == pytest.approx(3 * leg, abs=0.002)
    assert driven_km(None, [A, B], 1.0, back_to_depot=True) == pytest.approx(leg, abs=0.001)
