"""Placing a night's switch points: the noon-to-noon window, DST wall clocks and the ordering rules."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from fleet.lighting.astro import night_sun
from fleet.lighting.models import ControlProgram, SwitchPoint
from fleet.lighting.night import night_of, night_window, place_program, wall_clock_instant

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SEOUL_ZONE = ZoneInfo("Asia/Seoul")
HELSINKI_ZONE = ZoneInfo("Europe/Helsinki")
SEOUL = (37.5665, 126.9780)
HELSINKI = (60.1699, 24.9384)
REYKJAVIK = (64.1466, -21.9426)


def utc(*fields: int) -> dt.datetime:
    return dt.datetime(*fields, tzinfo=UTC)


def test_night_of_switches_at_local_noon():
    assert night_of(dt.datetime(2026, 1, 1, 11, 59, tzinfo=SEOUL_ZONE), SEOUL_ZONE) == dt.date(2025, 12, 31)
    assert night_of(dt.datetime(2026, 1, 1, 12, 0, tzinfo=SEOUL_ZONE), SEOUL_ZONE) == dt.date(2026, 1, 1)
    # The same instant belongs to different nights in different zones.
    assert night_of(utc(2026, 1, 1, 4, 0), SEOUL_ZONE) == dt.date(2026, 1, 1)
    assert night_of(utc(2026, 1, 1, 4, 0), BERLIN) == dt.date(2025, 12, 31)


@pytest.mark.parametrize(("night", "zone", "hours"), [
    (dt.date(2026, 3, 28), BERLIN, 23),  # spring forward in the early hours of Mar 29
    (dt.date(2026, 10, 24), BERLIN, 25),  # fall back in the early hours of Oct 25
    (dt.date(2026, 3, 28), SEOUL_ZONE, 24),
    (dt.date(2026, 10, 24), SEOUL_ZONE, 24),
])
def test_night_window_runs_noon_to_noon(night, zone, hours):
    start, end = night_window(night, zone)
    assert start.astimezone(zone).replace(tzinfo=None) == dt.datetime.combine(night, dt.time(12))
    assert end - start == dt.timedelta(hours=hours)


@pytest.mark.parametrize(("day", "wall", "zone", "expected"), [
    # Europe/Berlin springs from 02:00 CET to 03:00 CEST on 2026-03-29: the whole gap fires at 01:00 UTC.
    (dt.date(2026, 3, 29), dt.time(1, 59), BERLIN, utc(2026, 3, 29, 0, 59)),
    (dt.date(2026, 3, 29), dt.time(2, 0), BERLIN, utc(2026, 3, 29, 1, 0)),
    (dt.date(2026, 3, 29), dt.time(2, 30), BERLIN, utc(2026, 3, 29, 1, 0)),
    (dt.date(2026, 3, 29), dt.time(3, 0), BERLIN, utc(2026, 3, 29, 1, 0)),
    (dt.date(2026, 3, 29), dt.time(3, 1), BERLIN, utc(2026, 3, 29, 1, 1)),
    # It falls back from 03:00 CEST to 02:00 CET on 2026-10-25: 02:30 happens twice, we take CEST.
    (dt.date(2026, 10, 25), dt.time(2, 30), BERLIN, utc(2026, 10, 25, 0, 30)),
    (dt.date(2026, 10, 25), dt.time(3, 0), BERLIN, utc(2026, 10, 25, 2, 0)),
    # New York: 02:30 does not exist on 2026-03-08 and happens twice at 01:30 on 2026-11-01.
    (dt.date(2026, 3, 8), dt.time(2, 30), NEW_YORK, utc(2026, 3, 8, 7, 0)),
    (dt.date(2026, 11, 1), dt.time(1, 30), NEW_YORK, utc(2026, 11, 1, 5, 30)),
    # Seoul keeps UTC+9 all year.
    (dt.date(2026, 3, 29), dt.time(2, 30), SEOUL_ZONE, utc(2026, 3, 28, 17, 30)),
    (dt.date(2026, 10, 25), dt.time(2, 30), SEOUL_ZONE, utc(2026, 10, 24, 17, 30)),
])
def test_wall_clock_instant_follows_dst_rules(day, wall, zone, expected):
    assert wall_clock_instant(day, wall, zone) == expected


def test_evening_and_morning_points_land_on_the_right_days():
    program = ControlProgram("clock", [
        SwitchPoint.at_local_time("noon", "12:00", 10),
        SwitchPoint.at_local_time("late", "23:59", 50),
        SwitchPoint.at_local_time("midnight", "00:00", 40),
        SwitchPoint.at_local_time("morning", "11:59", 0),
    ])
    placed = place_program(program, dt.date(2026, 5, 4), SEOUL, SEOUL_ZONE)
    assert [point.at.astimezone(SEOUL_ZONE).replace(tzinfo=None) for point in placed] == [
        dt.datetime(2026, 5, 4, 12, 0), dt.datetime(2026, 5, 4, 23, 59),
        dt.datetime(2026, 5, 5, 0, 0), dt.datetime(2026, 5, 5, 11, 59)]


def test_sun_offsets_that_leave_the_night_are_clamped_to_its_window():
    program = ControlProgram("extreme", [
        SwitchPoint.at_sunset("very_early", 20, offset_minutes=-720),
        SwitchPoint.at_sunrise("very_late", 0, offset_minutes=720),
    ])
    start, end = night_window(dt.date(2026, 6, 21), SEOUL_ZONE)
    placed = place_program(program, dt.date(2026, 6, 21), SEOUL, SEOUL_ZONE)
    assert [(point.at, point.switch_point_id) for point in placed] == [(start, "very_early"), (end, "very_late")]


def test_helsinki_midsummer_keeps_the_listed_order():
    # Sunset+15 is 23:04, after the 23:00 dimming step; sunrise-15 is 03:39, before the
    # 05:00 commute boost. Lamps light straight at the 23:00 level and go off at 03:39.
    program = ControlProgram("standard", [
        SwitchPoint.at_sunset("dusk_on", 100, offset_minutes=15),
        SwitchPoint.at_local_time("late_dim", "23:00", 50),
        SwitchPoint.at_local_time("commute", "05:00", 80),
        SwitchPoint.at_sunrise("dawn_off", 0, offset_minutes=-15),
    ])
    night = dt.date(2026, 6, 21)
    sun = night_sun(HELSINKI, "Europe/Helsinki", night)

    placed = place_program(program, night, HELSINKI, HELSINKI_ZONE)

    assert [(point.at, point.dimming_level, point.switch_point_id) for point in placed] == [
        (sun.sunset + dt.timedelta(minutes=15), 50, "late_dim"),
        (sun.sunrise - dt.timedelta(minutes=15), 0, "dawn_off"),
    ]


def test_reykjavik_offsets_longer_than_the_night_keep_lamps_off():
    # Sunset is about 00:03 and sunrise 02:56: +90 and -90 minutes cross each other.
    program = ControlProgram("generous", [
        SwitchPoint.at_sunset("dusk_on", 100, offset_minutes=90),
        SwitchPoint.at_sunrise("dawn_off", 0, offset_minutes=-90),
    ])
    night = dt.date(2026, 6, 21)
    sun = night_sun(REYKJAVIK, "Atlantic/Reykjavik", night)

    placed = place_program(program, night, REYKJAVIK, ZoneInfo("Atlantic/Reykjavik"))

    assert [(point.at, point.dimming_level) for point in placed] == [(sun.sunset + dt.timedelta(minutes=90), 0)]


def test_clock_only_program_needs_no_sun():
    program = ControlProgram("clock", [SwitchPoint.at_local_time("on", "19:00", 100)])
    # Coordinates are not even looked at: an invalid location does not matter.
    placed = place_program(program, dt.date(2026, 6, 21), (999.0, 999.0), SEOUL_ZONE)
    assert [point.at for point in placed] == [utc(2026, 6, 21, 10, 0)]
