"""The city at a glance as people read it, and the pure geometry of its map: grid cells and outlines."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

# Most severe first: a cluster or device shows the first of these its active alarms have.
SEVERITIES = ("critical", "major", "minor", "warning")
# Bins by fill: five buckets of 20 percentage points; 100 % and above falls in the last.
FILL_BUCKET_WIDTH = 20
FILL_BUCKETS = 5
# More devices than this in view (below CLUSTER_BELOW_ZOOM) come as clusters: a map never holds
# more markers than a screen can show.
MAX_MARKERS = 400
CLUSTER_BELOW_ZOOM = 17
# However close the zoom, a view this full comes as clusters (a huge bbox with a street's zoom).
MAX_DEVICES_IN_VIEW = 2000
MAX_ZOOM = 22
# Cells of about 64 screen pixels of a 256-pixel tile.
CELLS_PER_TILE = 4
# Positions of district outlines are rounded to this grid (degrees) before the hull: 100,000
# devices become a few thousand points.
OUTLINE_GRID_DEG = 0.0005
OUTLINE_PAD_DEG = 0.001

Point = tuple[float, float]  # (lon, lat), as GeoJSON orders them


class KindCounts(Struct):
    total: int
    by_status: dict[str, int]


class DeviceCounts(Struct):
    total: Annotated[int, Meta(description="decommissioned left out, as GET /api/v1/devices counts them")]
    by_status: dict[str, int]
    by_kind: dict[str, KindCounts]


class DistrictDevices(Struct):
    name: str
    devices: Annotated[int, Meta(description="in service (decommissioned left out)")]
    by_kind: dict[str, int]
    by_status: dict[str, int]


class Districts(Struct):
    items: Annotated[list[DistrictDevices], Meta(description="every district with a device in service, by name")]


class DistrictAlarms(Struct):
    district: Annotated[str | None, Meta(description="null: devices with no district")]
    total: int
    by_severity: dict[str, int]


class AlarmFigures(Struct):
    active: Annotated[int, Meta(description="alarms in status active: equals GET /api/v1/alarms/counts?status=active")]
    by_severity: dict[str, int]
    by_district: list[DistrictAlarms]


class Tonight(Struct):
    """The night the figures cover, noon to noon in the city's local time (its offset, not `Z`)."""

    from_: datetime = msgspec.field(name="from")
    to: datetime
    energy_kwh: Annotated[float, Meta(description="tonight's schedule at each light's nominal wattage")]
    uncontrolled_kwh: Annotated[float, Meta(description="every light at full power from sunset to sunrise")]


class LightingFigures(Struct):
    lights: int
    lit_now: int
    tonight: Tonight


class FillBucket(Struct):
    from_: int = msgspec.field(name="from")
    to: int
    count: int


class RoutesToday(Struct):
    routes: int
    planned: Annotated[int, Meta(description="planned or assigned, not started")]
    in_progress: int
    completed: int
    stops_total: int
    stops_done: int


class BinFigures(Struct):
    total: int
    by_fill: list[FillBucket]
    unknown: Annotated[int, Meta(description="bins that have reported no fill level")]
    routes_today: RoutesToday


class AccessPointFigures(Struct):
    total: int
    online: int
    clients_now: Annotated[int | None, Meta(
        description="null: LwM2M object 12 has no client count and no access point reports one")]


class CampaignUnderWay(Struct):
    id: UUID
    name: str
    status: str
    device_count: int
    counts: dict[str, int]
    progress_percent: Annotated[float, Meta(description="devices ended (succeeded, failed, cancelled) of those in waves")]


class Overview(Struct):
    at: datetime
    devices: DeviceCounts
    alarms: AlarmFigures
    lighting: LightingFigures
    bins: BinFigures
    access_points: AccessPointFigures
    campaigns: list[CampaignUnderWay]


class MapCluster(Struct):
    lat: float
    lon: float
    count: int
    by_status: dict[str, int]
    worst_severity: str | None
    bbox: Annotated[list[float], Meta(description="min_lon, min_lat, max_lon, max_lat of its members")]


class MapDevice(Struct):
    id: UUID
    name: str
    kind: str
    status: str
    lat: float
    lon: float
    district: str | None
    worst_severity: str | None


class MapView(Struct):
    clusters: list[MapCluster]
    devices: list[MapDevice]


class DistrictProperties(Struct):
    district: str
    devices: int
    label_lat: float
    label_lon: float


class Polygon(Struct, tag="Polygon", tag_field="type"):
    coordinates: list[list[tuple[float, float]]]


class DistrictOutline(Struct, tag="Feature", tag_field="type"):
    geometry: Polygon
    properties: DistrictProperties


class DistrictOutlines(Struct, tag="FeatureCollection", tag_field="type"):
    features: list[DistrictOutline]


def cell_degrees(zoom: int) -> float:
    """Side of a map cluster's cell in degrees: a quarter of a web-mercator tile's width at this
    zoom (about 64 screen pixels); used for latitude too, near enough at a city's scale."""
    return 360.0 / 2 ** zoom / CELLS_PER_TILE


def convex_hull(points: Iterable[Point]) -> list[Point]:
    """Counter-clockwise hull without repeating the first point (Andrew's monotone chain)."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def cross(o: Point, a: Point, b: Point) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[Point] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[Point] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def outline(points: Sequence[Point], pad: float = OUTLINE_PAD_DEG) -> list[Point]:
    """A closed GeoJSON ring around the points: their hull with each corner moved `pad` degrees
    away from its centre; fewer than three corners (a street in a line, one spot) become a
    square `pad` beyond their extent."""
    hull = convex_hull(points)
    if len(hull) < 3:
        lons, lats = [p[0] for p in points], [p[1] for p in points]
        w, s, e, n = min(lons) - pad, min(lats) - pad, max(lons) + pad, max(lats) + pad
        return [(w, s), (e, s), (e, n), (w, n), (w, s)]
    cx = sum(p[0] for p in hull) / len(hull)
    cy = sum(p[1] for p in hull) / len(hull)
    ring = []
    for x, y in hull:
        length = math.hypot(x - cx, y - cy) or 1.0
        ring.append((x + pad * (x - cx) / length, y + pad * (y - cy) / length))
    return [*ring, ring[0]]
