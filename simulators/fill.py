"""The bins' fill model, in one place for the live simulated bins and offline benchmarks: waste
arriving by weekday and hour, each bin's own rate, the fill sensor's noise and rare spikes, and
emptyings by a rule (`fill_series`, `fill_history`).

Weekdays: commercial districts and those with big parks fill more at the weekend, homes a little;
organic waste comes out heavier on Mondays (the weekend's kitchens). A bin's rate is its kind's
litres a day x its district's street activity x a spread of its own (a bus stop or a quiet
corner), drawn from a stream named after its endpoint, so a live bin and `fill_series` for the
same spec and seed fill alike. The sensor reads within a percent or so; about one reading in 250
is far off (a bag on the sensor reads high, an echo through a gap reads near empty) and a robust
forecaster must ignore it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from simulators.clock import HOUR_S, DailyCurve
from simulators.geography import activity
from simulators.inventory import DeviceSpec
from simulators.noise import Noise

LITRES_PER_DAY = {"organic": 70.0, "inorganic": 80.0, "plastic": 55.0, "paper": 45.0,
                  "glass": 18.0, "metal": 12.0}
OTHER_LITRES_PER_DAY = 30.0
DEFAULT_CAPACITY = 240
# When people throw things away, relative to the day's mean (local hours 0..23).
DEPOSITS = DailyCurve([0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.5, 1.0, 1.3, 1.0, 1.0, 1.4,
                       1.9, 1.6, 1.1, 1.0, 1.2, 1.6, 2.0, 2.1, 1.8, 1.3, 0.8, 0.4])
# Districts whose streets are shops and offices, and those with the city's big parks (Yongsan
# Family Park, Olympic Park, Children's Grand Park, World Cup Park); the rest are homes.
COMMERCIAL = frozenset({"Jung-gu", "Gangnam-gu", "Jongno-gu", "Yeongdeungpo-gu", "Seocho-gu"})
PARKS = frozenset({"Yongsan-gu", "Songpa-gu", "Gwangjin-gu", "Mapo-gu"})
# Monday first; normalised to a mean of 1 so a week holds the kind's litres a day x 7.
WEEKDAYS = {"commercial": (0.9, 0.9, 0.9, 0.95, 1.05, 1.35, 1.2),
            "park": (0.75, 0.75, 0.75, 0.8, 0.95, 1.55, 1.6),
            "residential": (1.0, 0.95, 0.95, 0.95, 1.0, 1.05, 1.1)}
ORGANIC_MONDAY = 1.4
RATE_SPREAD = (0.6, 1.4)
STEP_SIGMA = 0.2            # how much one stretch's arrivals vary around the expected
SENSOR_SIGMA = 0.8          # percent
SPIKE_CHANCE = 0.004        # per reading
SPIKE_UP = (25.0, 60.0)     # a bag on the sensor: this much above the truth (at most 100)
SPIKE_DOWN_SHARE = 0.3      # of spikes: an echo through a gap, reading near empty
# A crew on the fixed round empties a bin it passes when it is at least this full (organic spoils).
WORTH_EMPTYING = {"organic": 15.0}
WORTH_EMPTYING_OTHERWISE = 30.0
ROUND_HOURS = (21.0, 29.0)  # a district's round starts between 21:00 and 05:00
ROUND_LENGTH_H = 3.0
RESIDUE_PERCENT = (0.0, 2.0)  # what sticks to an emptied bin


def district_character(district: str | None) -> str:
    if district in COMMERCIAL:
        return "commercial"
    return "park" if district in PARKS else "residential"


def weekday_factors(district: str | None, waste_kind: str) -> tuple[float, ...]:
    """Seven factors, Monday first, with a mean of 1."""
    factors = list(WEEKDAYS[district_character(district)])
    if waste_kind == "organic":
        factors[0] *= ORGANIC_MONDAY
    mean = sum(factors) / 7
    return tuple(f / mean for f in factors)


def local_hours(t: float, zone: ZoneInfo) -> float:
    """Hours since the Unix epoch in local time (what DEPOSITS and the weekdays take)."""
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    return (t + (offset.total_seconds() if offset else 0.0)) / HOUR_S


@dataclass(frozen=True, slots=True)
class FillModel:
    """One bin: how big, how fast it fills on an average day, and how its week goes."""

    capacity_l: float
    litres_per_day: float
    weekday: tuple[float, ...]
    waste_kind: str = "other"
    round_hour: float = 24.0  # local hour (21..32) the fixed round passes it

    @classmethod
    def of(cls, spec: DeviceSpec, seed: int) -> FillModel:
        capacity = float(spec.attributes.get("capacity_litres") or DEFAULT_CAPACITY)
        kind = spec.attributes.get("waste_kind") or "other"
        own = Noise(seed, f"fill:{spec.endpoint}")
        rate = (LITRES_PER_DAY.get(kind, OTHER_LITRES_PER_DAY) * activity(spec.district)
                * own.uniform(*RATE_SPREAD))
        district_round = Noise(seed, f"round:{spec.district}").uniform(*ROUND_HOURS)
        return cls(capacity, rate, weekday_factors(spec.district, kind), kind,
                   district_round + own.uniform(0, ROUND_LENGTH_H))

    @property
    def worth_emptying(self) -> float:
        return WORTH_EMPTYING.get(self.waste_kind, WORTH_EMPTYING_OTHERWISE)

    def expected_litres(self, from_hours: float, to_hours: float) -> float:
        """Litres expected between two local hours since the epoch, day by day."""
        total, hour = 0.0, from_hours
        while hour < to_hours:
            day = math.floor(hour / 24)
            end = min(to_hours, (day + 1) * 24.0)
            # 1970-01-01 was a Thursday (index 3, Monday first).
            total += self.weekday[(day + 3) % 7] * DEPOSITS.integral(hour, end)
            hour = end
        return self.litres_per_day * total / 24

    def arrivals(self, from_hours: float, to_hours: float, noise: Noise) -> float:
        """Litres that did arrive: the expected, give or take STEP_SIGMA."""
        return self.expected_litres(from_hours, to_hours) * max(0.0, 1 + noise.gauss(0, STEP_SIGMA))

    def residue(self, noise: Noise) -> float:
        """Litres left in a bin just emptied."""
        return self.capacity_l * noise.uniform(*RESIDUE_PERCENT) / 100


def sensor_reading(true_percent: float, noise: Noise) -> float:
    """What the fill sensor reports for a bin this full."""
    if noise.chance(SPIKE_CHANCE):
        if noise.chance(SPIKE_DOWN_SHARE):
            return round(noise.uniform(0.0, 3.0), 1)
        return round(min(100.0, true_percent + noise.uniform(*SPIKE_UP)), 1)
    return round(max(0.0, true_percent + noise.gauss(0, SENSOR_SIGMA)), 1)


# -- emptying rules for offline series ------------------------------------------------------------
# A rule answers, at the end of a step (local hours since the epoch) with the bin this full:
# is it emptied now?
Emptying = Callable[[float, float, float], bool]


def fixed_round(model: FillModel) -> Emptying:
    """The world's default: the district's crew passes nightly and empties it when worth it."""
    def due(from_hours: float, to_hours: float, percent: float) -> bool:
        passing = math.floor((to_hours - model.round_hour) / 24) * 24 + model.round_hour
        return from_hours < passing <= to_hours and percent >= model.worth_emptying
    return due


def at_threshold(threshold: float = 80.0) -> Emptying:
    """A perfect planner: emptied the moment it reaches the threshold."""
    return lambda _from, _to, percent: percent >= threshold


def never(_from: float, _to: float, _percent: float) -> bool:
    return False


@dataclass(slots=True)
class FillHistory:
    readings: list[tuple[datetime, float]] = field(default_factory=list)  # what the sensor sent
    truth: list[tuple[datetime, float]] = field(default_factory=list)     # the real fill, then
    emptied: list[datetime] = field(default_factory=list)


def fill_history(spec_or_model: DeviceSpec | FillModel, start: datetime, days: float, seed: int,
                 interval_s: float = 900.0, *, emptying: Emptying | str = "round",
                 timezone: str = "Asia/Seoul", initial_percent: float | None = None) -> FillHistory:
    """A bin's readings every `interval_s` over `days` from `start` (naive: local time), with the
    same model the live simulated bins use; `emptying` is a rule or 'round', 'never', 'threshold'."""
    model = spec_or_model if isinstance(spec_or_model, FillModel) else FillModel.of(spec_or_model, seed)
    name = spec_or_model.endpoint if isinstance(spec_or_model, DeviceSpec) else "model"
    zone = ZoneInfo(timezone)
    rule = _rule(emptying, model)
    arrivals, sensor = Noise(seed, f"arrivals:{name}"), Noise(seed, f"sensor:{name}")
    moment = start if start.tzinfo else start.replace(tzinfo=zone)
    t = moment.timestamp()
    percent = initial_percent if initial_percent is not None else arrivals.uniform(0.0, 60.0)
    litres = model.capacity_l * percent / 100
    history = FillHistory()
    hours = local_hours(t, zone)
    for _ in range(int(days * 86_400 / interval_s)):
        t += interval_s
        later = local_hours(t, zone)
        litres = min(model.capacity_l, litres + model.arrivals(hours, later, arrivals))
        when = datetime.fromtimestamp(t, UTC)
        if rule(hours, later, litres / model.capacity_l * 100):
            litres = model.residue(arrivals)
            history.emptied.append(when)
        true_percent = round(litres / model.capacity_l * 100, 1)
        history.truth.append((when, true_percent))
        history.readings.append((when, sensor_reading(true_percent, sensor)))
        hours = later
    return history


def _rule(emptying: Emptying | str, model: FillModel) -> Emptying:
    if callable(emptying):
        return emptying
    rules = {"round": fixed_round, "never": lambda _model: never, "threshold": lambda _model: at_threshold()}
    if emptying not in rules:
        raise ValueError(f"unknown emptying rule {emptying!r}: a callable or one of {sorted(rules)}")
    return rules[emptying](model)


def fill_series(spec_or_model: DeviceSpec | FillModel, start: datetime, days: float, seed: int,
                interval_s: float = 900.0, **options) -> list[tuple[datetime, float]]:
    """Just the readings of `fill_history`: (UTC time, percent) every interval."""
    return fill_history(spec_or_model, start, days, seed, interval_s, **options).readings

