"""Simulated bins for the forecast bench: the simulated bin's fill model (its kinds' litres per
day, the DEPOSITS curve over the day, the per-step noise) plus a weekday effect, hourly readings
with sensor noise and spikes, and rounds that empty the bins worth emptying every other night."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fleet.collection.forecast import Reading
from simulators.devices.waste_bin import DEPOSITS, LITRES_PER_DAY, WORTH_EMPTYING, WORTH_EMPTYING_OTHERWISE

# Monday first: quieter early in the week, busiest on Saturday.
WEEKDAY = (0.85, 0.9, 0.95, 1.0, 1.1, 1.35, 1.2)
CAPACITIES = (120, 240, 240, 240, 660)
DISTRICTS = 8
SENSOR_SD = 1.0        # percent
SPIKE_CHANCE = 0.01    # a reading far off (reflection off a lid, a bag right under the sensor)
ROUND_EVERY_DAYS = 2


@dataclass
class SimBin:
    key: int
    kind: str
    district: int
    percent_per_day: float
    round_hour: float                                           # local hours after midnight
    gained: list[float] = field(default_factory=list)           # true percent gained per hour
    fill: list[float] = field(default_factory=list)             # true fill at the start of each hour
    readings: list[Reading] = field(default_factory=list)
    emptied: list[tuple[int, float]] = field(default_factory=list)  # (hour index, fill after)


def simulate(bins: int, days: int, extra_days: int, start: datetime, seed: int = 7) -> list[SimBin]:
    """`days` of readings and emptyings; the true gains run `extra_days` further, so the time a
    bin would have reached any fill is known past the last reading."""
    rnd = random.Random(seed)
    activity = [rnd.uniform(0.6, 1.6) for _ in range(DISTRICTS)]
    round_at = [rnd.uniform(21, 29) for _ in range(DISTRICTS)]
    out = []
    for key in range(bins):
        kind = rnd.choice(sorted(LITRES_PER_DAY))
        district = rnd.randrange(DISTRICTS)
        capacity = rnd.choice(CAPACITIES)
        litres = LITRES_PER_DAY[kind] * activity[district] * rnd.uniform(0.6, 1.4)
        b = SimBin(key, kind, district, litres / capacity * 100, round_at[district] + rnd.uniform(0, 3))
        worth = WORTH_EMPTYING.get(kind, WORTH_EMPTYING_OTHERWISE)
        fill = rnd.uniform(0, 60)
        local0 = start.hour + start.minute / 60
        for h in range((days + extra_days) * 24):
            local_h = local0 + h
            weekday = (start.weekday() + int(local_h // 24)) % 7
            gain = (b.percent_per_day * DEPOSITS.integral(local_h, local_h + 1) / 24 * WEEKDAY[weekday]
                    * max(0.0, 1 + rnd.gauss(0, 0.2)))
            b.gained.append(gain)
            b.fill.append(fill)
            if h < days * 24:
                at = start + timedelta(hours=h, minutes=rnd.uniform(0, 5))
                reading = fill + rnd.gauss(0, SENSOR_SD)
                if rnd.random() < SPIKE_CHANCE:
                    reading += rnd.choice((-1, 1)) * rnd.uniform(25, 60)
                b.readings.append(Reading(at, round(min(150.0, max(0.0, reading)), 1)))
            fill = min(100.0, fill + gain)
            day, hour_of_day = divmod(local_h, 24)
            passing = int(day) % ROUND_EVERY_DAYS == district % ROUND_EVERY_DAYS and \
                hour_of_day <= b.round_hour % 24 < hour_of_day + 1
            if passing and h < days * 24 and fill >= worth:
                fill = rnd.uniform(0, 3)
                b.emptied.append((h + 1, fill))
        out.append(b)
    return out


def hours_to(b: SimBin, hour: int, threshold: float) -> float | None:
    """True hours from the start of `hour` until the bin, left alone, would reach `threshold`."""
    level = b.fill[hour]
    if level >= threshold:
        return 0.0
    for h in range(hour, len(b.gained)):
        gain = b.gained[h]
        if level + gain >= threshold:
            return h - hour + (threshold - level) / gain
        level += gain
    return None
