"""Where the sun is on one night at one place: sunset, sunrise and the polar fallbacks, cached.

A "night of date D" runs from D's noon to D+1's noon (see `fleet.lighting.night`), so we want
the sunset after D's solar noon and the sunrise before D+1's. astral answers per calendar date
of the zone it is given, which splits nights oddly where clocks run far from the sun (in
Reykjavik in June `sunset(June 21)` is the sunset of the evening of June 20, just after
midnight, and some nights get no sunset at all). So we ask astral in a fixed "solar" zone in
which D's solar noon reads 12:00: there a night's sunset falls on D and its sunrise on D+1.

astral gives up (ValueError) on polar days and on some nights next to them. Then, or whenever
its answers do not lie in order between the two solar noons, we find the sun's lowest point
between those noons and bisect the horizon crossings on either side of it from the sun's
elevation:
- the lowest point above the horizon: midnight sun, the night has no darkness
  (`midnight_sun` is True, `solar_midnight` is that lowest point);
- a side without a crossing: the sun stays down there; civil dusk/dawn (-6°) are bisected
  the same way as fallbacks and stay None when even civil twilight does not happen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo

from astral import Observer
from astral import sun

UTC = dt.UTC
# 0.01° is about 1 km; it moves sunset by seconds and lets every light of a street share
# one cache entry, which is what makes tens of thousands of lights cheap to schedule.
COORDINATE_DECIMALS = 2
# The sun's centre at -0.833° (refraction plus apparent radius) is astral's sunset, so the
# same threshold keeps our polar tests consistent with astral's own answers.
SUNSET_ELEVATION = -0.833
CIVIL_DUSK_ELEVATION = -6.0
SEARCH_STEPS = 32  # enough to narrow a day down to well under a second either way
GOLDEN_SECTION = (5 ** 0.5 - 1) / 2
NOON = dt.time(12, 0)
SUN_CACHE_SIZE = 65_536

Location = tuple[float, float]
_SunEvent = Callable[..., dt.datetime]


@dataclass(frozen=True)
class NightSun:
    """Sun instants (UTC) bounding the darkness of one night at one place."""

    solar_noon: dt.datetime
    solar_midnight: dt.datetime
    midnight_sun: bool
    sunset: dt.datetime | None = None
    sunrise: dt.datetime | None = None
    civil_dusk: dt.datetime | None = None  # looked up only when there is no sunset
    civil_dawn: dt.datetime | None = None  # looked up only when there is no sunrise


def rounded(location: Location) -> Location:
    """The cache key for a light's coordinates; also validates them."""
    latitude, longitude = location
    if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
        raise ValueError(f"location {location!r} is not a latitude/longitude pair in degrees")
    return round(latitude, COORDINATE_DECIMALS), round(longitude, COORDINATE_DECIMALS)


def night_sun(location: Location, tz: str, night: dt.date) -> NightSun:
    """The sun of the night that starts on local date `night` at `location` in zone `tz`."""
    latitude, longitude = rounded(location)
    return _night_sun(latitude, longitude, tz, night)


@lru_cache(maxsize=SUN_CACHE_SIZE)
def _night_sun(latitude: float, longitude: float, tz: str, night: dt.date) -> NightSun:
    observer = Observer(latitude, longitude)
    solar_noon = _solar_noon(observer, ZoneInfo(tz), night)
    # The next solar noon differs from this by seconds; it only bounds the searches.
    next_noon = solar_noon + dt.timedelta(days=1)
    solar_zone = dt.timezone(dt.datetime.combine(night, NOON) - solar_noon.replace(tzinfo=None))
    sunset = _astral_or_none(sun.sunset, observer, night, solar_zone)
    sunrise = _astral_or_none(sun.sunrise, observer, night + dt.timedelta(days=1), solar_zone)
    if sunset and sunrise and solar_noon < sunset < sunrise < next_noon:
        return NightSun(solar_noon, solar_noon + dt.timedelta(hours=12), midnight_sun=False,
                        sunset=sunset, sunrise=sunrise)

    lowest = _lowest_point(observer, solar_noon, next_noon)
    if _elevation(observer, lowest) > SUNSET_ELEVATION:
        return NightSun(solar_noon, lowest, midnight_sun=True)
    sunset = _crossing(observer, SUNSET_ELEVATION, solar_noon, lowest)
    sunrise = _crossing(observer, SUNSET_ELEVATION, lowest, next_noon)
    civil_dusk = None if sunset else _crossing(observer, CIVIL_DUSK_ELEVATION, solar_noon, lowest)
    civil_dawn = None if sunrise else _crossing(observer, CIVIL_DUSK_ELEVATION, lowest, next_noon)
    return NightSun(solar_noon, lowest, midnight_sun=False, sunset=sunset, sunrise=sunrise,
                    civil_dusk=civil_dusk, civil_dawn=civil_dawn)


def _astral_or_none(event: _SunEvent, observer: Observer, date: dt.date,
                    zone: dt.tzinfo) -> dt.datetime | None:
    try:
        return event(observer, date, tzinfo=zone).astimezone(UTC)
    except ValueError:  # astral's way of saying "not on this date here"
        return None


def _solar_noon(observer: Observer, zone: ZoneInfo, night: dt.date) -> dt.datetime:
    """The solar noon on local date `night` (astral computes it per UTC date)."""
    noon = sun.noon(observer, night)
    local_date = noon.astimezone(zone).date()
    if local_date != night:  # zones far from their longitude, e.g. Pacific/Kiritimati
        noon = sun.noon(observer, night + (night - local_date))
    return noon.astimezone(UTC)


def _elevation(observer: Observer, instant: dt.datetime) -> float:
    return sun.elevation(observer, instant, with_refraction=False)


def _lowest_point(observer: Observer, start: dt.datetime, end: dt.datetime) -> dt.datetime:
    """The instant the sun is lowest between two solar noons (golden-section search)."""
    for _ in range(SEARCH_STEPS):
        step = (end - start) * GOLDEN_SECTION
        left, right = end - step, start + step
        if _elevation(observer, left) < _elevation(observer, right):
            end = right
        else:
            start = left
    return start + (end - start) / 2


def _crossing(observer: Observer, elevation: float, start: dt.datetime,
              end: dt.datetime) -> dt.datetime | None:
    """When the sun passes `elevation` between `start` and `end`, if it does (bisection)."""
    start_above = _elevation(observer, start) > elevation
    if start_above == (_elevation(observer, end) > elevation):
        return None
    for _ in range(SEARCH_STEPS):
        middle = start + (end - start) / 2
        if (_elevation(observer, middle) > elevation) == start_above:
            start = middle
        else:
            end = middle
    return end


def cache_info() -> object:
    """Hit/miss counts of the sun cache, for benchmarks and the scheduler's metrics."""
    return _night_sun.cache_info()
