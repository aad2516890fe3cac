"""The world every simulated device shares: the clock, the city's daylight and its weather."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta

from astral import Observer
from astral import sun

from simulators.clock import DAY_S, SimClock, seasonal
from simulators.geography import SEOUL, District, centre

# Seoul's monthly mean air temperatures, 1991-2020 normals (KMA), January first.
SEOUL_MONTHLY_MEAN_C = (-1.9, 0.7, 6.1, 12.6, 18.2, 22.4, 25.3, 26.1, 21.6, 15.0, 7.5, 0.2)
DIURNAL_AMPLITUDE_C = 4.0
WARMEST_HOUR = 15.0


class Environment:
    def __init__(self, clock: SimClock, districts: tuple[District, ...] = SEOUL) -> None:
        self.clock = clock
        self.districts = districts
        lat, lon = centre(districts)
        self._observer = Observer(lat, lon)
        self._sun: dict[date, tuple[float, float]] = {}

    def sun(self, day: date) -> tuple[float, float]:
        """(sunrise, sunset) of a local date, as simulated Unix times."""
        times = self._sun.get(day)
        if times is None:
            zone = self.clock.zone
            try:
                times = (sun.sunrise(self._observer, day, tzinfo=zone).timestamp(),
                         sun.sunset(self._observer, day, tzinfo=zone).timestamp())
            except ValueError:  # polar day or night: not a Seoul problem, but stay defined
                noon = datetime.combine(day, time(12), zone).timestamp()
                times = (noon - 6 * 3600, noon + 6 * 3600)
            if len(self._sun) > 1000:
                self._sun.clear()
            self._sun[day] = times
        return times

    def is_dark(self, sim_t: float, photocell_offset_s: float = 0.0) -> bool:
        """Whether a photocell that trips photocell_offset_s late at dusk and early at dawn sees night."""
        sunrise, sunset = self.sun(self.clock.local_date(sim_t))
        return sim_t < sunrise - photocell_offset_s or sim_t >= sunset + photocell_offset_s

    def next_daylight_change(self, sim_t: float, photocell_offset_s: float = 0.0) -> float:
        """The first dusk or dawn (as the photocell sees it) strictly after sim_t."""
        today = self.clock.local_date(sim_t)
        for day in (today, today + timedelta(days=1)):
            sunrise, sunset = self.sun(day)
            for moment in (sunrise - photocell_offset_s, sunset + photocell_offset_s):
                if moment > sim_t:
                    return moment
        return sim_t + DAY_S

    def ambient_temperature(self, sim_t: float) -> float:
        """Air temperature in the shade, from climate normals and a daily swing."""
        clock = self.clock
        mean = seasonal(clock.local_date(sim_t).timetuple().tm_yday, SEOUL_MONTHLY_MEAN_C)
        hour = clock.local_hour(sim_t)
        return mean + DIURNAL_AMPLITUDE_C * math.cos(2 * math.pi * (hour - WARMEST_HOUR) / 24)
