"""The map's pure geometry: cluster cells by zoom, convex hulls and padded district outlines."""

from __future__ import annotations

from fleet.overview.models import cell_degrees, convex_hull, outline


def test_cells_are_a_quarter_tile():
    assert cell_degrees(0) == 90.0
    assert cell_degrees(12) == 360 / 4096 / 4
    assert cell_degrees(13) * 2 == cell_degrees(12)


def test_hull_drops_inner_and_collinear_points():
    square = [(0, 0), (2, 0), (2, 2), (0, 2)]
    hull = convex_hull([*square, (1, 1), (1, 0), (0.5, 1.5), (0, 0)])
    assert sorted(hull) == sorted(square) and len(hull) == 4
    assert convex_hull([(1, 1), (1, 1)]) == [(1, 1)]


def test_outline_pads_the_hull_and_closes_the_ring():
    ring = outline([(0, 0), (2, 0), (2, 2), (0, 2), (1, 1)], pad=0.5)
    assert ring[0] == ring[-1] and len(ring) == 5
    assert all(abs(x - 1) > 1 and abs(y - 1) > 1 for x, y in ring)  # every corner moved outward


def test_outline_of_fewer_than_three_spots_is_a_square():
    assert outline([(5, 5)], pad=0.1) == [(4.9, 4.9), (5.1, 4.9), (5.1, 5.1), (4.9, 5.1), (4.9, 4.9)]
    ring = outline([(0, 0), (1, 1), (2, 2)], pad=0.1)  # in a line: the hull has two points
    assert ring == [(-0.1, -0.1), (2.1, -0.1), (2.1, 2.1), (-0.1, 2.1), (-0.1, -0.1)]

