"""What is measured: the baseline and the filtered lists, each a rotation of request paths.

Rotating through several districts, points and tags keeps one hot page from flattering the
result; every path is checked once before load (200, non-empty, only the caller's city, and
every item really matches the filter).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from urllib.parse import urlencode

from simulators.geography import SEOUL, place

LIST = "/api/v1/devices"
PAGE = 50
NEAR_RADIUS_M = 500
# A box about 1 km across, like a map view zoomed to a few streets.
BBOX_HALF_M = 500
# A small box straddling the edge of a district's built-up core: a map view over a park or the
# river, with a handful of devices (fewer than a page), the case that reads the most rows.
SPARSE_BOX_HALF_M = 150
# Two common, one uncommon and one rare tag (see dataset.TAGS for shares).
TAG_ROTATION = ("main-road", "school-zone", "park", "pilot:adaptive-dimming")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    # Rotated through, one per request; for a cursor walk, the first page of the walk.
    paths: tuple[str, ...]
    authenticated: bool = True
    # Follow next_cursor from each response; start over from paths[0] at the end.
    cursor_walk: bool = False
    expect_items: bool = True


def _query(**params: object) -> str:
    return f"{LIST}?{urlencode(params, safe=':,')}"


def _points(count: int, seed: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    # Within each district's core, where devices stand, so every circle and box has some.
    return [place(SEOUL[i % len(SEOUL)], rng) for i in range(count)]


def scenarios(rotation: int = 25, seed: int = 7) -> list[Scenario]:
    points = _points(rotation, seed)
    boxes = []
    for lat, lon in _points(rotation, seed + 1):
        dlat = math.degrees(BBOX_HALF_M / 6_371_008.8)
        dlon = dlat / math.cos(math.radians(lat))
        boxes.append(f"{lon - dlon:.6f},{lat - dlat:.6f},{lon + dlon:.6f},{lat + dlat:.6f}")
    sparse_boxes = []
    for district in SEOUL:
        lat = district.lat + math.degrees(district.radius_m / 6_371_008.8)
        dlat = math.degrees(SPARSE_BOX_HALF_M / 6_371_008.8)
        dlon = dlat / math.cos(math.radians(lat))
        sparse_boxes.append(f"{district.lon - dlon:.6f},{lat - dlat:.6f},{district.lon + dlon:.6f},{lat + dlat:.6f}")
    return [
        Scenario("baseline /healthz", ("/healthz",), authenticated=False, expect_items=False),
        Scenario("kind=streetlight", (_query(kind="streetlight", limit=PAGE),)),
        Scenario("district+status=online",
                 tuple(_query(district=d.name, status="online", limit=PAGE) for d in SEOUL)),
        Scenario(f"near {NEAR_RADIUS_M} m",
                 tuple(_query(near=f"{lat},{lon}", radius_m=NEAR_RADIUS_M, limit=PAGE) for lat, lon in points)),
        Scenario("bbox ~1 km", tuple(_query(bbox=b, limit=PAGE) for b in boxes)),
        Scenario("bbox sparse 300 m", tuple(_query(bbox=b, limit=PAGE) for b in sparse_boxes)),
        Scenario("tag", tuple(_query(tag=t, limit=PAGE) for t in TAG_ROTATION)),
        Scenario("cursor walk", (_query(limit=PAGE),), cursor_walk=True),
    ]


def cursor_path(first_page: str, cursor: str) -> str:
    return f"{first_page}&cursor={cursor}"
