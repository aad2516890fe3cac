"""Energy used per light, group or district over the nights of a period, and what dimming saved.

For each light and each night that overlaps [since, until):
- the night's span runs from its first switch-on to its last switch-off as the light's schedule
  (calendar and overrides) has them, clipped to the period; a light without a calendar uses
  sunset to sunrise;
- energy used over a span comes from the cumulative active energy (/3418/0/6, Wh), read at
  both ends by linear interpolation between the nearest readings either side (each within
  `MAX_READING_GAP`); where that cannot be done or the counter went backwards (a reset), from
  the mean of the active power readings (/3418/0/4, W) inside the span times its length;
- full power is nominal_wattage x the span's hours: the light at 100 % all night;
- savings = full power - energy used.

Per light, energy, full power and savings add up over the nights that have data, so they
compare like with like; `lit_hours` counts every night. Group and district totals add up the
lights that have data and a nominal wattage; savings_percent = savings / full power.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from fleet.access.models import Permission, Principal
from fleet.db import Database
from fleet.errors import FieldError, NotFound, ValidationFailed
from fleet.lighting import validation
from fleet.lighting.astro import night_sun
from fleet.lighting.night import ONE_DAY, night_of
from fleet.lighting.plan import Cluster, clusters, load_schedule, plan_lights
from fleet.lighting.records import Light
from fleet.lighting.repository import LightingRepository
from fleet.registry.models import DeviceFilter
from fleet.registry.repository import DeviceRepository
from fleet.registry.service import require

CUMULATIVE_ENERGY = "/3418/0/6"
ACTIVE_POWER = "/3418/0/4"
MAX_READING_GAP = dt.timedelta(hours=2)
MAX_PERIOD = dt.timedelta(days=31)
MAX_SPANS = 400_000
DEFAULT_PERIOD = dt.timedelta(days=1)

Span = tuple[dt.datetime, dt.datetime]


@dataclass(frozen=True, slots=True)
class LightEnergy:
    device_id: UUID
    nominal_wattage: float | None
    nights: int
    lit_hours: float
    energy_wh: float | None
    full_power_wh: float | None
    savings_wh: float | None
    savings_percent: float | None
    method: str  # cumulative_energy | active_power | none


@dataclass(frozen=True, slots=True)
class EnergyReport:
    since: dt.datetime
    until: dt.datetime
    device_id: UUID | None
    group_id: UUID | None
    district: str | None
    lights: int
    lights_with_data: int
    lit_hours: float
    energy_wh: float
    full_power_wh: float
    savings_wh: float
    savings_percent: float | None
    devices: list[LightEnergy] | None


def night_spans(levels: list[tuple[dt.datetime, int]], until: dt.datetime, zone: ZoneInfo) -> list[Span]:
    """From (instant, level) steps, each night's first-on to last-off, clipped to the last instant `until`."""
    lit: list[Span] = []
    for (start, level), (end, _next) in zip(levels, [*levels[1:], (until, 0)]):
        if level > 0 and end > start:
            lit.append((start, end))
    nights: dict[dt.date, Span] = {}
    for start, end in lit:
        night = night_of(start, zone)
        first, last = nights.get(night, (start, end))
        nights[night] = (min(first, start), max(last, end))
    return sorted(nights.values())


def scheduled_spans(cluster: Cluster, since: dt.datetime, until: dt.datetime) -> list[Span]:
    steps = [(since, cluster.level_at(since).dimming_level)]
    steps += [(t.at, t.dimming_level) for t in cluster.transitions(since, until)]
    return night_spans(steps, until, ZoneInfo(cluster.timezone))


def sun_spans(light: Light, timezone: str, since: dt.datetime, until: dt.datetime) -> list[Span]:
    """Sunset to sunrise of each night, for lights no calendar governs."""
    zone = ZoneInfo(timezone)
    spans, night = [], night_of(since, zone)
    while night <= night_of(until, zone):
        sun = night_sun(light.location, timezone, night)
        if sun.sunset is not None and sun.sunrise is not None:
            start, end = max(sun.sunset, since), min(sun.sunrise, until)
            if end > start:
                spans.append((start, end))
        night += ONE_DAY
    return spans


def _interpolate(before: tuple | None, after: tuple | None, at: dt.datetime) -> float | None:
    if before is not None and after is not None and after[0] > before[0]:
        share = (at - before[0]) / (after[0] - before[0])
        return before[1] + (after[1] - before[1]) * share
    found = before or after
    return None if found is None else found[1]


def span_energy(row: asyncpg.Record, start: dt.datetime, end: dt.datetime) -> tuple[float | None, str]:
    """Wh used over one span from its readings, and which method gave it."""
    def reading(prefix: str) -> tuple | None:
        return None if row[f"{prefix}_t"] is None else (row[f"{prefix}_t"], row[f"{prefix}_v"])
    first = _interpolate(reading("b0"), reading("a0"), start)
    last = _interpolate(reading("b1"), reading("a1"), end)
    if first is not None and last is not None and last >= first:
        return last - first, "cumulative_energy"
    if row["readings"]:
        return row["mean_w"] * (end - start).total_seconds() / 3600, "active_power"
    return None, "none"


class EnergyService:
    def __init__(self, db: Database, *, clock=lambda: dt.datetime.now(dt.UTC)) -> None:
        self.db = db
        self.clock = clock

    async def report(self, principal: Principal, *, device_id: UUID | None = None, group_id: UUID | None = None,
                     district: str | None = None, since: dt.datetime | str | None = None,
                     until: dt.datetime | str | None = None, breakdown: bool = False) -> EnergyReport:
        require(principal, Permission.READ)
        if sum(x is not None for x in (device_id, group_id, district)) != 1:
            raise ValidationFailed("invalid energy query", [FieldError(
                "device_id", "give exactly one of device_id, group_id or district")])
        if district is not None:
            district = validation.short_text(district, "district")
        since, until = self._period(principal.tenant_timezone, since, until)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            repo = LightingRepository(conn)
            await DeviceRepository(conn).require_known_district(principal.tenant_id, district)
            if group_id is not None:
                ids = await DeviceRepository(conn).ids_matching(principal.tenant_id, DeviceFilter(group_id=group_id))
                lights = await repo.lights(principal.tenant_id, ids)
            else:
                lights = await repo.lights(principal.tenant_id, None if device_id is None else [device_id],
                                           district=district)
            if device_id is not None and not lights:
                raise NotFound(f"streetlight {device_id} not found")
            schedule = await load_schedule(conn, principal.tenant_id, principal.tenant_timezone,
                                           since - ONE_DAY, until)
            spans = self._spans(schedule, lights, since, until)
            if sum(len(s) for s in spans.values()) > MAX_SPANS:
                raise ValidationFailed("period too large", [FieldError(
                    "since", f"{len(lights)} lights over this period is too much; shorten it")])
            rows = await self._readings(conn, spans)
        per_light = [self._light(light, spans[light.device_id], rows.get(light.device_id, {})) for light in lights]
        return self._total(since, until, device_id, group_id, district, per_light,
                           breakdown or device_id is not None)

    def _period(self, timezone: str, since: dt.datetime | str | None,
                until: dt.datetime | str | None) -> tuple[dt.datetime, dt.datetime]:
        until = validation.instant(until, "until", timezone) or self.clock()
        since = validation.instant(since, "since", timezone) or until - DEFAULT_PERIOD
        if not since < until:
            raise ValidationFailed("invalid period", [FieldError("until", "must be after since")])
        if until - since > MAX_PERIOD:
            raise ValidationFailed("invalid period", [FieldError("since", "a period spans at most 31 days")])
        return since, until

    @staticmethod
    def _spans(schedule, lights: list[Light], since: dt.datetime, until: dt.datetime) -> dict[UUID, list[Span]]:
        plans = plan_lights(schedule, lights)
        spans: dict[UUID, list[Span]] = {}
        for cluster in clusters(schedule, plans):
            if cluster.calendar is None:
                continue  # overrides on lights without a calendar: their nights are the sun's, below
            shared = scheduled_spans(cluster, since, until)
            for plan in cluster.plans:
                spans[plan.light.device_id] = shared
        for plan in plans:
            if plan.calendar_id is None:
                spans[plan.light.device_id] = sun_spans(plan.light, schedule.timezone, since, until)
        return spans

    @staticmethod
    async def _readings(conn: asyncpg.Connection,
                        spans: dict[UUID, list[Span]]) -> dict[UUID, dict[Span, asyncpg.Record]]:
        flat = [(device_id, start, end) for device_id, items in spans.items() for start, end in items]
        if not flat:
            return {}
        devices, starts, ends = (list(column) for column in zip(*flat, strict=True))
        rows = await conn.fetch(
            """select w.device_id, w.starts_at, w.ends_at,
                      b0.time as b0_t, b0.v_num as b0_v, a0.time as a0_t, a0.v_num as a0_v,
                      b1.time as b1_t, b1.v_num as b1_v, a1.time as a1_t, a1.v_num as a1_v,
                      p.mean_w, p.readings
               from unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) as w(device_id, starts_at, ends_at)
               left join lateral (select time, v_num from telemetry
                                  where device_id = w.device_id and path = $4 and v_num is not null
                                    and time <= w.starts_at and time > w.starts_at - $6::interval
                                  order by time desc limit 1) b0 on true
               left join lateral (select time, v_num from telemetry
                                  where device_id = w.device_id and path = $4 and v_num is not null
                                    and time > w.starts_at and time < w.starts_at + $6::interval
                                  order by time limit 1) a0 on true
               left join lateral (select time, v_num from telemetry
                                  where device_id = w.device_id and path = $4 and v_num is not null
                                    and time <= w.ends_at and time > w.ends_at - $6::interval
                                  order by time desc limit 1) b1 on true
               left join lateral (select time, v_num from telemetry
                                  where device_id = w.device_id and path = $4 and v_num is not null
                                    and time > w.ends_at and time < w.ends_at + $6::interval
                                  order by time limit 1) a1 on true
               left join lateral (select avg(v_num) as mean_w, count(v_num) as readings from telemetry
                                  where device_id = w.device_id and path = $5
                                    and time >= w.starts_at and time < w.ends_at) p on true""",
            devices, starts, ends, CUMULATIVE_ENERGY, ACTIVE_POWER, MAX_READING_GAP)
        found: dict[UUID, dict[Span, asyncpg.Record]] = defaultdict(dict)
        for row in rows:
            found[row["device_id"]][(row["starts_at"], row["ends_at"])] = row
        return found

    @staticmethod
    def _light(light: Light, spans: list[Span], rows: dict[Span, asyncpg.Record]) -> LightEnergy:
        watts = light.nominal_wattage
        lit_hours = sum((end - start).total_seconds() for start, end in spans) / 3600
        energy = full = 0.0
        methods = set()
        for start, end in spans:
            row = rows.get((start, end))
            used, method = span_energy(row, start, end) if row is not None else (None, "none")
            if used is None:
                continue
            methods.add(method)
            energy += used
            full += (watts or 0.0) * (end - start).total_seconds() / 3600
        if not methods:
            return LightEnergy(light.device_id, watts, len(spans), round(lit_hours, 3), None, None, None, None, "none")
        method = "active_power" if "active_power" in methods else "cumulative_energy"
        if not watts:
            return LightEnergy(light.device_id, watts, len(spans), round(lit_hours, 3), round(energy, 2),
                               None, None, None, method)
        savings = full - energy
        return LightEnergy(light.device_id, watts, len(spans), round(lit_hours, 3), round(energy, 2),
                           round(full, 2), round(savings, 2), round(100 * savings / full, 1) if full else None,
                           method)

    @staticmethod
    def _total(since, until, device_id, group_id, district, per_light: list[LightEnergy],
               breakdown: bool) -> EnergyReport:
        counted = [e for e in per_light if e.full_power_wh is not None]
        energy = sum(e.energy_wh for e in counted)
        full = sum(e.full_power_wh for e in counted)
        savings = full - energy
        return EnergyReport(
            since, until, device_id, group_id, district, len(per_light),
            sum(1 for e in per_light if e.energy_wh is not None),
            round(sum(e.lit_hours for e in per_light), 3), round(energy, 2), round(full, 2), round(savings, 2),
            round(100 * savings / full, 1) if full else None, per_light if breakdown else None)
