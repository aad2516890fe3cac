"""Simulated time: a clock running --speed times faster than the wall, and daily curves over it.

Physics (daylight, waste, Wi-Fi crowds) follows the simulated local time of the city; protocol
timers (retransmissions, lifetimes) follow the wall, as they would on a real network. Values a
device reports as timestamps are wall times, so the server sees a consistent, faster world.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

DAY_S = 86_400.0
HOUR_S = 3_600.0
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class SimClock:
    """Simulated Unix time; `start` is where it begins (default: now), `speed` its rate."""

    def __init__(self, speed: float = 1.0, start: float | None = None,
                 timezone: str = "Asia/Seoul") -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.mono0 = time.monotonic()
        self.wall0 = time.time()
        self.start = self.wall0 if start is None else start
        self.zone = ZoneInfo(timezone)
        self._offset_day = -1
        self._offset_s = 0.0

    def now(self) -> float:
        return self.start + (time.monotonic() - self.mono0) * self.speed

    def at_monotonic(self, mono: float) -> float:
        return self.start + (mono - self.mono0) * self.speed

    def monotonic_at(self, sim_t: float) -> float:
        """When, on the loop's monotonic clock, simulated time reaches sim_t."""
        return self.mono0 + (sim_t - self.start) / self.speed

    def wall_at(self, sim_t: float) -> datetime:
        """The wall-clock time a device reports for simulated time sim_t."""
        return datetime.fromtimestamp(self.wall0 + (sim_t - self.start) / self.speed, UTC)

    def utc_offset(self, sim_t: float) -> float:
        """The zone's UTC offset in seconds, looked up once per simulated UTC day."""
        day = int(sim_t // DAY_S)
        if day != self._offset_day:
            offset = datetime.fromtimestamp(sim_t, self.zone).utcoffset()
            self._offset_s = offset.total_seconds() if offset else 0.0
            self._offset_day = day
        return self._offset_s

    def local_hours(self, sim_t: float) -> float:
        """Hours since the Unix epoch in local time: the argument daily curves take."""
        return (sim_t + self.utc_offset(sim_t)) / HOUR_S

    def local_hour(self, sim_t: float) -> float:
        """0 <= hour < 24 of local time."""
        return self.local_hours(sim_t) % 24.0

    def local_datetime(self, sim_t: float) -> datetime:
        return datetime.fromtimestamp(sim_t, self.zone)

    def local_date(self, sim_t: float) -> date:
        """The local calendar date, without building a zoned datetime (a hot path)."""
        return date.fromordinal(_EPOCH_ORDINAL + int(self.local_hours(sim_t) // 24))


class DailyCurve:
    """A periodic curve over the local day, linear between hourly knots.

    Its integral over any span is O(1), so a device can be advanced over hours of simulated
    time in one step instead of being stepped on a tick.
    """

    __slots__ = ("knots", "_prefix", "mean")

    def __init__(self, knots: Sequence[float], *, normalise: bool = True) -> None:
        if len(knots) != 24:
            raise ValueError("a daily curve has 24 hourly knots")
        values = list(knots)
        areas = [(values[h] + values[(h + 1) % 24]) / 2 for h in range(24)]
        if normalise:
            scale = 24 / sum(areas)
            values = [v * scale for v in values]
            areas = [a * scale for a in areas]
        self.knots = tuple(values)
        prefix = [0.0]
        for area in areas:
            prefix.append(prefix[-1] + area)
        self._prefix = tuple(prefix)
        self.mean = prefix[-1] / 24

    def value(self, hour: float) -> float:
        hour %= 24.0
        index = int(hour)
        fraction = hour - index
        start = self.knots[index]
        return start + (self.knots[(index + 1) % 24] - start) * fraction

    def _cumulative(self, hours: float) -> float:
        days, hour = divmod(hours, 24.0)
        index = int(hour)
        fraction = hour - index
        start = self.knots[index]
        slope = self.knots[(index + 1) % 24] - start
        return (days * self._prefix[24] + self._prefix[index]
                + start * fraction + slope * fraction * fraction / 2)

    def integral(self, from_hours: float, to_hours: float) -> float:
        """Area under the curve between two absolute local hours (value x hours)."""
        return self._cumulative(to_hours) - self._cumulative(from_hours)


def seasonal(day_of_year: float, monthly: Sequence[float]) -> float:
    """A monthly climate normal interpolated to a day of the year (mid-month knots)."""
    position = (day_of_year - 15.2) / 30.44
    index = math.floor(position)
    fraction = position - index
    return monthly[index % 12] + (monthly[(index + 1) % 12] - monthly[index % 12]) * fraction
