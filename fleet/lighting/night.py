"""Placing one night's switch points on the UTC timeline: the night window, wall clocks and sun rules.

The night of date D runs from D 12:00 to D+1 12:00 local time, and the program the calendar
selects for D governs that whole span: a festival on Dec 31 keeps its program through the early
hours of Jan 1. Within the night:
- sunset-based points and local times >= 12:00 fall on D; sunrise-based points and local
  times < 12:00 fall on D+1;
- a point that would land outside the night window is clamped to its edge;
- points keep the order the program lists them in, even when sun times cross local times or
  each other (Nordic summer nights): in the evening a point due before its predecessor
  waits for it, in the morning a point due after its successor is brought forward to it, so
  lamps neither light early nor stay lit into daylight; if the morning would begin before
  the evening ends, it waits for the evening. Points sharing an instant fire once, as the
  one listed last;
- a level holds until the next point fires, so a night starts at the previous night's last
  level.

Wall-clock times follow the zone's DST rules: a time inside the spring-forward gap fires at
the first valid instant after the gap; a time in the fall-back overlap fires once, at its first
occurrence (fold=0).

High latitudes, where astral finds no sunset or sunrise:
- midnight sun (the sun stays up all night): the dark span has zero length, so sunset- and
  sunrise-based points both fall at solar midnight, offsets ignored; by the ordering rules
  everything listed between them fires there too and the last (normally the sunrise "off")
  wins. Local-time points outside that span still fire, and programs without sun-based
  points run unchanged;
- polar night (the sun stays down): a missing sunset falls back to civil dusk and a missing
  sunrise to civil dawn, offsets applied; without even civil twilight the whole window is
  dark, so sunset-based points fire at the window's start and sunrise-based ones at its end,
  offsets ignored: the sunrise "off" then coincides with the next night's sunset "on" and
  loses to it, so the lamps stay lit through the polar day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo

from fleet.lighting.astro import Location, NightSun, night_sun, rounded
from fleet.lighting.models import NOON, Anchor, ControlProgram, SwitchPoint

UTC = dt.UTC
ONE_DAY = dt.timedelta(days=1)
ONE_SECOND = dt.timedelta(seconds=1)
PLACEMENT_CACHE_SIZE = 65_536


@dataclass(frozen=True)
class PlacedSwitchPoint:
    """A switch point of one night, resolved to the UTC instant it fires."""

    at: dt.datetime
    dimming_level: int
    switch_point_id: str


def night_of(at: dt.datetime, zone: ZoneInfo) -> dt.date:
    """The night (by its starting date) that the instant `at` belongs to."""
    local = at.astimezone(zone)
    return local.date() if local.time() >= NOON else local.date() - ONE_DAY


def night_window(night: dt.date, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    return wall_clock_instant(night, NOON, zone), wall_clock_instant(night + ONE_DAY, NOON, zone)


def wall_clock_instant(day: dt.date, wall: dt.time, zone: ZoneInfo) -> dt.datetime:
    """The UTC instant a local wall-clock time on `day` fires at, under the DST rules above."""
    naive = dt.datetime.combine(day, wall)
    first_occurrence = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first_occurrence.astimezone(zone).replace(tzinfo=None) == naive:
        return first_occurrence
    # In a gap, fold=0 reads the wall time with the offset from before the jump (an instant
    # after the gap) and fold=1 with the offset after it (an instant before the gap); the jump
    # lies between them, on a whole second.
    before = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = first_occurrence
    offset_before = before.astimezone(zone).utcoffset()
    while after - before > ONE_SECOND:
        middle = before + (after - before) // 2
        if middle.astimezone(zone).utcoffset() == offset_before:
            before = middle
        else:
            after = middle
    return after


def place_program(program: ControlProgram, night: dt.date, location: Location,
                  zone: ZoneInfo) -> tuple[PlacedSwitchPoint, ...]:
    """The program's switch points on `night`, in firing order, one per instant."""
    # Lights of one street share a rounded location, so they share the placement too.
    cell = rounded(location) if program.follows_sun else None
    return _place_program(program, night, cell, zone.key)


@lru_cache(maxsize=PLACEMENT_CACHE_SIZE)
def _place_program(program: ControlProgram, night: dt.date, cell: Location | None,
                   tz: str) -> tuple[PlacedSwitchPoint, ...]:
    zone = ZoneInfo(tz)
    window_start, window_end = night_window(night, zone)
    sun = night_sun(cell, tz, night) if cell is not None else None
    instants = [max(window_start, min(_resolve(point, night, zone, sun, window_start, window_end),
                                      window_end))
                for point in program.switch_points]
    # Validation guarantees evening points are listed before morning ones.
    _keep_listed_order(instants, evening_count=sum(not point.in_morning for point in program.switch_points))

    placed: list[PlacedSwitchPoint] = []
    for point, instant in zip(program.switch_points, instants):
        if placed and placed[-1].at == instant:
            placed.pop()
        placed.append(PlacedSwitchPoint(instant, point.dimming_level, point.switch_point_id))
    return tuple(placed)


def _keep_listed_order(instants: list[dt.datetime], evening_count: int) -> None:
    for index in range(1, evening_count):
        instants[index] = max(instants[index], instants[index - 1])
    for index in reversed(range(evening_count, len(instants) - 1)):
        instants[index] = min(instants[index], instants[index + 1])
    for index in range(max(evening_count, 1), len(instants)):
        instants[index] = max(instants[index], instants[index - 1])


def _resolve(point: SwitchPoint, night: dt.date, zone: ZoneInfo, sun: NightSun | None,
             window_start: dt.datetime, window_end: dt.datetime) -> dt.datetime:
    if point.anchor is Anchor.LOCAL_TIME:
        assert point.local_time is not None
        day = night + ONE_DAY if point.in_morning else night
        return wall_clock_instant(day, point.local_time, zone)
    assert sun is not None
    if sun.midnight_sun:
        return sun.solar_midnight
    offset = dt.timedelta(minutes=point.offset_minutes)
    if point.anchor is Anchor.SUNSET:
        anchor = sun.sunset or sun.civil_dusk
        return anchor + offset if anchor is not None else window_start
    anchor = sun.sunrise or sun.civil_dawn
    return anchor + offset if anchor is not None else window_end
