"""The city at a glance: the control room's figures, its map aggregated by zoom, district outlines."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from fleet.access.models import Permission, Principal
from fleet.campaigns.progress import ENDED
from fleet.campaigns.repository import CampaignRepository
from fleet.campaigns.models import DeviceState
from fleet.db import Database
from fleet.errors import FieldError, ValidationFailed
from fleet.lighting.astro import rounded
from fleet.lighting.energy import sun_spans
from fleet.lighting.night import night_of, night_window
from fleet.lighting.plan import Cluster, Schedule, clusters, load_schedule, plan_lights
from fleet.lighting.records import Light
from fleet.overview.models import (CLUSTER_BELOW_ZOOM, FILL_BUCKET_WIDTH, FILL_BUCKETS, MAX_DEVICES_IN_VIEW,
                                   MAX_MARKERS, MAX_ZOOM, OUTLINE_GRID_DEG, SEVERITIES, AccessPointFigures,
                                   AlarmFigures, BinFigures, CampaignUnderWay, DeviceCounts, DistrictAlarms, DistrictDevices,
                                   Districts,
                                   DistrictOutline, DistrictOutlines, DistrictProperties, FillBucket, KindCounts,
                                   LightingFigures, MapCluster, MapDevice, MapView, Overview, Polygon, RoutesToday,
                                   Tonight, cell_degrees, outline)
from fleet.overview.repository import OverviewRepository
from fleet.registry.filters import parse_filter
from fleet.registry.service import require


# How long tonight's energy and the district outlines are served before they are computed again.
CACHE_FOR = dt.timedelta(minutes=5)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class OverviewService:
    """Read-only figures for anyone who may read the city; one snapshot (transaction) per answer.

    "Active" alarms are alarms in status `active`: raised and neither acknowledged nor cleared,
    shelved or not, exactly what GET /api/v1/alarms/counts?status=active counts (an
    acknowledged alarm is open but no longer active). Decommissioning clears a device's alarms,
    so no active alarm belongs to a decommissioned device.
    """

    def __init__(self, db: Database, *, clock: Callable[[], dt.datetime] = utc_now,
                 cache_for: dt.timedelta = CACHE_FOR) -> None:
        self.db = db
        self.clock = clock
        self.cache_for = cache_for
        # Per city: tonight's energy and the district outlines, with when each was computed. Both
        # take a second or more at 100,000 devices and change only with the schedule or the map.
        self._tonight: dict[tuple[UUID, dt.date], tuple[dt.datetime, Tonight]] = {}
        self._outlines: dict[UUID, tuple[dt.datetime, DistrictOutlines]] = {}

    async def overview(self, principal: Principal) -> Overview:
        require(principal, Permission.READ)
        now = self.clock()
        zone = ZoneInfo(principal.tenant_timezone)
        tenant = principal.tenant_id
        async with self.db.tenant_tx(tenant, readonly=True) as conn:
            repo = OverviewRepository(conn)
            await repo.plan_for_these_values()
            devices = _devices(await repo.devices_by_kind_status(tenant))
            alarms = _alarms(await repo.active_alarms(tenant))
            lit = await repo.lights_lit(tenant)
            bins = _bins(await repo.bins_by_fill(tenant, FILL_BUCKET_WIDTH, FILL_BUCKETS),
                         await repo.routes_of_day(tenant, now.astimezone(zone).date()))
            aps = await repo.access_points(tenant)
            campaigns = await _campaigns(conn, tenant, await repo.campaigns_under_way(tenant))
            night = night_of(now, zone)
            cached = self._tonight.get((tenant, night))
            if cached is None or now - cached[0] > self.cache_for:
                start, end = night_window(night, zone)
                schedule = await load_schedule(conn, tenant, principal.tenant_timezone,
                                               start - dt.timedelta(days=1), end)
                lights = await _lights_by_cell(repo, tenant, schedule)
                cached = None
        if cached is None:
            # Off the event loop: on a fresh process the sun of each cell is not yet cached and
            # the plan takes a few hundred ms at 100,000 devices, which other requests need not wait.
            tonight = await asyncio.to_thread(tonight_energy, schedule, lights, start, end)
            cached = self._tonight[(tenant, night)] = (now, tonight)
        tonight = cached[1]
        return Overview(now, devices, alarms, LightingFigures(lit["lights"], lit["lit"], tonight), bins,
                        AccessPointFigures(aps["total"], aps["online"], None), campaigns)

    async def map(self, principal: Principal, bbox: str | None, zoom: str | None) -> MapView:
        """Clusters on a grid of cell_degrees(zoom) when more than MAX_MARKERS devices are in view
        below CLUSTER_BELOW_ZOOM (or more than MAX_DEVICES_IN_VIEW at any zoom), else the devices."""
        require(principal, Permission.READ)
        box, level = _view(bbox, zoom)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            repo = OverviewRepository(conn)
            await repo.plan_for_these_values()
            in_view = await repo.count_in_box(principal.tenant_id, box)
            if in_view > MAX_DEVICES_IN_VIEW or (in_view > MAX_MARKERS and level < CLUSTER_BELOW_ZOOM):
                return MapView(_clusters(await repo.cells_in_box(principal.tenant_id, box, cell_degrees(level))), [])
            rows = await repo.devices_in_box(principal.tenant_id, box, MAX_DEVICES_IN_VIEW)
        return MapView([], [MapDevice(r["id"], r["endpoint"], r["kind"], r["status"], r["lat"], r["lon"],
                                      r["district"], _severity(r["rank"])) for r in rows])

    async def district_counts(self, principal: Principal) -> Districts:
        """Every district of the city (one with a device in service) and its devices per kind
        and status: the names a `district` filter takes."""
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            rows = await OverviewRepository(conn).devices_by_kind_status(principal.tenant_id, per_district=True)
        districts: dict[str, DistrictDevices] = {}
        for r in rows:
            district = districts.setdefault(r["district"], DistrictDevices(r["district"], 0, {}, {}))
            district.devices += r["n"]
            district.by_kind[r["kind"]] = district.by_kind.get(r["kind"], 0) + r["n"]
            district.by_status[r["status"]] = district.by_status.get(r["status"], 0) + r["n"]
        return Districts(list(districts.values()))

    async def districts(self, principal: Principal) -> DistrictOutlines:
        require(principal, Permission.READ)
        now = self.clock()
        cached = self._outlines.get(principal.tenant_id)
        if cached is not None and now - cached[0] <= self.cache_for:
            return cached[1]
        outlines = await self._districts(principal)
        self._outlines[principal.tenant_id] = (now, outlines)
        return outlines

    async def _districts(self, principal: Principal) -> DistrictOutlines:
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            rows = await OverviewRepository(conn).district_points(principal.tenant_id, OUTLINE_GRID_DEG)
        points: dict[str, list[tuple[float, float]]] = defaultdict(list)
        # Per district: devices, summed latitude, summed longitude (the label's mean position).
        sums: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        for r in rows:
            lon = float(r["lon"])
            points[r["district"]] += [(lon, float(r["low"])), (lon, float(r["high"]))]
            total = sums[r["district"]]
            total[0] += r["n"]
            total[1] += r["sum_lat"]
            total[2] += r["sum_lon"]
        features = []
        for district, spots in points.items():
            devices, sum_lat, sum_lon = sums[district]
            # The label at the devices' mean position (inside the hull, which is convex).
            label_lat, label_lon = sum_lat / devices, sum_lon / devices
            spots = list(dict.fromkeys(spots))
            ring = [(round(x, 6), round(y, 6)) for x, y in outline(spots)]
            features.append(DistrictOutline(Polygon([ring]), DistrictProperties(
                district, devices, round(label_lat, 6), round(label_lon, 6))))
        return DistrictOutlines(features)


def _devices(rows: list[asyncpg.Record]) -> DeviceCounts:
    by_status: dict[str, int] = defaultdict(int)
    by_kind: dict[str, KindCounts] = {}
    for r in rows:
        by_status[r["status"]] += r["n"]
        kind = by_kind.setdefault(r["kind"], KindCounts(0, {}))
        kind.total += r["n"]
        kind.by_status[r["status"]] = r["n"]
    return DeviceCounts(sum(by_status.values()), dict(by_status), by_kind)


def _alarms(rows: list[asyncpg.Record]) -> AlarmFigures:
    by_severity: dict[str, int] = defaultdict(int)
    by_district: dict[str | None, DistrictAlarms] = {}
    for r in rows:
        by_severity[r["severity"]] += r["n"]
        district = by_district.setdefault(r["district"], DistrictAlarms(r["district"], 0, {}))
        district.total += r["n"]
        district.by_severity[r["severity"]] = r["n"]
    ranked = sorted(by_district.values(), key=lambda d: (-d.total, d.district is None, d.district or ""))
    return AlarmFigures(sum(by_severity.values()), dict(by_severity), ranked)


def _bins(fill: list[asyncpg.Record], routes: asyncpg.Record) -> BinFigures:
    counts = {r["bucket"]: r["n"] for r in fill}
    buckets = [FillBucket(i * FILL_BUCKET_WIDTH, (i + 1) * FILL_BUCKET_WIDTH, counts.get(i, 0))
               for i in range(FILL_BUCKETS)]
    return BinFigures(sum(counts.values()), buckets, counts.get(None, 0), RoutesToday(
        routes["routes"], routes["planned"], routes["in_progress"], routes["completed"],
        routes["stops_total"], routes["stops_done"]))


async def _campaigns(conn: asyncpg.Connection, tenant_id: UUID, rows: list[asyncpg.Record]) -> list[CampaignUnderWay]:
    counts: dict[UUID, dict[str, int]] = {r["id"]: {s.value: 0 for s in DeviceState} for r in rows}
    if rows:
        for c in await CampaignRepository(conn).counts(tenant_id, list(counts)):
            counts[c["campaign_id"]][c["state"]] += c["n"]
    found = []
    for r in rows:
        per_state = counts[r["id"]]
        in_waves = sum(per_state.values()) - per_state[DeviceState.SKIPPED]
        ended = sum(per_state[s] for s in ENDED)
        found.append(CampaignUnderWay(r["id"], r["name"], r["status"], r["device_count"], per_state,
                                      round(100 * ended / in_waves, 1) if in_waves else 0.0))
    return found


# Stands for the lights no group, and no override by device, of the schedule names: no device has it.
UNNAMED = UUID(int=0)


async def _lights_by_cell(repo: OverviewRepository, tenant_id: UUID, schedule: Schedule) -> list[Light]:
    """The city's lights with a nominal wattage, as few Lights as the schedule tells apart.

    Lights of one district in one sun cell that the schedule's groups and device overrides name
    alike follow the same calendar and overrides: one Light with their summed wattage stands
    for them all (100,000 lights become a few thousand, and the plan costs what those do).
    """
    named: dict[UUID, set[tuple[str, UUID]]] = defaultdict(set)
    for group_id, members in schedule.group_members.items():
        for device_id in members:
            named[device_id].add(("group", group_id))
    for override in schedule.overrides:
        for device_id in override.scope.device_ids:
            named[device_id].add(("override", override.id))
    # The first light of each way of being named stands for the others named the same way.
    kin_of: dict[frozenset, UUID] = {}
    kin = [kin_of.setdefault(frozenset(names), device_id) for device_id, names in named.items()]
    rows = await repo.wattage_by_cell(tenant_id, list(named), kin)
    return [Light(r["kin"] or UNNAMED, r["cy"] / 100, r["cx"] / 100, r["district"], "", r["watts"]) for r in rows]


def tonight_energy(schedule: Schedule, lights: list[Light], start: dt.datetime, end: dt.datetime) -> Tonight:
    """Tonight's energy as planned, against the same lights uncontrolled, in kWh.

    A Light may stand for many lights (see _lights_by_cell): its nominal wattage is theirs summed.

    Planned: each light with a calendar at its cluster's levels over the night (power taken as
    proportional to the dimming level); a light no calendar governs burns full power from
    sunset to sunrise, as fleet.lighting.energy counts it. Uncontrolled: every light at its
    nominal wattage from sunset to sunrise. Lights without a nominal wattage count in neither.
    """
    plans = [p for p in plan_lights(schedule, lights) if p.light.nominal_wattage]
    dark_h: dict[tuple[float, float], float] = {}

    def dark_hours(light: Light) -> float:
        cell = rounded(light.location)  # the sun of one cell serves every light in it
        if cell not in dark_h:
            dark_h[cell] = _hours(sun_spans(light, schedule.timezone, start, end))
        return dark_h[cell]

    uncontrolled = planned = 0.0
    for plan in plans:
        uncontrolled += plan.light.nominal_wattage * dark_hours(plan.light)
        if plan.calendar_id is None:
            planned += plan.light.nominal_wattage * dark_hours(plan.light)
    for cluster in clusters(schedule, plans):
        if cluster.calendar is not None:
            watts = sum(p.light.nominal_wattage for p in cluster.plans)
            planned += watts * _level_hours(cluster, start, end)
    # The window as the city's clocks show it; the figures are the same whatever the offset.
    zone = ZoneInfo(schedule.timezone)
    return Tonight(start.astimezone(zone), end.astimezone(zone), round(planned / 1000, 2),
                   round(uncontrolled / 1000, 2))


def _hours(spans: list[tuple[dt.datetime, dt.datetime]]) -> float:
    return sum((b - a).total_seconds() for a, b in spans) / 3600


def _level_hours(cluster: Cluster, start: dt.datetime, end: dt.datetime) -> float:
    """Hours at full power equal to the cluster's levels over [start, end)."""
    first = cluster.level_at(start)
    steps = [(start, first.dimming_level if first else 0)]
    steps += [(t.at, t.dimming_level or 0) for t in cluster.transitions(start, end)]
    return sum(level / 100 * (b - a).total_seconds() / 3600
               for (a, level), (b, _next) in zip(steps, [*steps[1:], (end, 0)]))


def _view(bbox: str | None, zoom: str | None) -> tuple[tuple[float, float, float, float], int]:
    """(min_lon, min_lat, max_lon, max_lat) and the zoom; raises naming each bad field."""
    errors: list[FieldError] = []
    box = None
    if bbox in (None, ""):
        errors.append(FieldError("bbox", "is required: min_lon,min_lat,max_lon,max_lat"))
    else:
        try:
            parsed = parse_filter({"bbox": bbox}).bbox
            box = (parsed.min_lon, parsed.min_lat, parsed.max_lon, parsed.max_lat)
        except ValidationFailed as exc:
            errors += exc.errors
    level = None
    try:
        level = int(str(zoom))
    except ValueError:
        pass
    if level is None or not 0 <= level <= MAX_ZOOM:
        errors.append(FieldError("zoom", f"must be a whole number 0-{MAX_ZOOM}"))
    if errors:
        raise ValidationFailed("invalid map view", errors)
    return box, level


def _severity(rank: int | None) -> str | None:
    return None if rank is None else SEVERITIES[rank - 1]


def _clusters(rows: list[asyncpg.Record]) -> list[MapCluster]:
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for r in rows:
        c = cells.setdefault((r["cx"], r["cy"]), {"n": 0, "lat": 0.0, "lon": 0.0, "by_status": {}, "rank": None,
                                                   "box": [math.inf, math.inf, -math.inf, -math.inf]})
        c["n"] += r["n"]
        c["lat"] += r["sum_lat"]
        c["lon"] += r["sum_lon"]
        c["by_status"][r["status"]] = r["n"]
        if r["rank"] is not None:
            c["rank"] = r["rank"] if c["rank"] is None else min(c["rank"], r["rank"])
        box = c["box"]
        c["box"] = [min(box[0], r["min_lon"]), min(box[1], r["min_lat"]), max(box[2], r["max_lon"]),
                    max(box[3], r["max_lat"])]
    return [MapCluster(round(c["lat"] / c["n"], 6), round(c["lon"] / c["n"], 6), c["n"], c["by_status"],
                       _severity(c["rank"]), c["box"]) for _key, c in sorted(cells.items())]
