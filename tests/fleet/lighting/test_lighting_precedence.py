"""Who sets the level: calendar rules by night, overrides by priority and age, and the calendar resuming."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from fleet.lighting.models import Calendar, CalendarRule, ControlProgram, Override, SwitchPoint, YearlyDateRange
from fleet.lighting.schedule import LevelSource, level_at, transitions

UTC = dt.UTC
SEOUL, KST = (37.5665, 126.9780), ZoneInfo("Asia/Seoul")
CREATED = dt.datetime(2026, 12, 1, tzinfo=UTC)

FESTIVAL = ControlProgram("festival", [SwitchPoint.at_sunset("dusk_on", 100), SwitchPoint.at_sunrise("dawn_off", 0)])
SAVER = ControlProgram("saver", [SwitchPoint.at_sunset("dusk_on", 100, 15),
                                 SwitchPoint.at_local_time("save", "22:00", 30),
                                 SwitchPoint.at_sunrise("dawn_off", 0, -15)])
HOLIDAYS = ControlProgram("holidays", [SwitchPoint.at_sunset("dusk_on", 100),
                                       SwitchPoint.at_local_time("late", "01:00", 70),
                                       SwitchPoint.at_sunrise("dawn_off", 0)])


def kst(*fields: int) -> dt.datetime:
    return dt.datetime(*fields, tzinfo=KST)


def override(override_id: str, level: int, priority: int, starts_at: dt.datetime, ends_at: dt.datetime,
             created_at: dt.datetime = CREATED) -> Override:
    return Override(override_id, "district:jongno", level, priority, starts_at, ends_at, created_at)


def decide(calendar: Calendar, at: dt.datetime, overrides=()):
    return level_at(calendar, list(overrides), SEOUL, "Asia/Seoul", at)


@pytest.fixture
def city_calendar(standard_program) -> Calendar:
    return Calendar("seoul", [standard_program, FESTIVAL, SAVER, HOLIDAYS], "standard", [
        CalendarRule("new_years_eve", "festival", dates={dt.date(2026, 12, 31)}),
        CalendarRule("thursdays", "saver", weekdays={4}),  # 2026-12-31 is a Thursday
    ])


def test_festival_date_beats_the_weekday_rule_and_lasts_past_midnight(city_calendar):
    eve = decide(city_calendar, kst(2026, 12, 31, 23, 30))
    assert (eve.dimming_level, eve.source, eve.rule_id, eve.program_id) == (
        100, LevelSource.CALENDAR, "new_years_eve", "festival")

    # 03:00 on Jan 1 is still the night of Dec 31: the festival program keeps running.
    small_hours = decide(city_calendar, kst(2027, 1, 1, 3, 0))
    assert (small_hours.dimming_level, small_hours.rule_id) == (100, "new_years_eve")
    assert kst(2026, 12, 31, 17, 15) < small_hours.since < kst(2026, 12, 31, 17, 25)

    # The night of Jan 1 (a Friday) falls back to the default program.
    next_night = decide(city_calendar, kst(2027, 1, 1, 23, 30))
    assert (next_night.dimming_level, next_night.source, next_night.rule_id) == (50, LevelSource.DEFAULT, None)


def test_rule_order_decides_between_overlapping_rules(city_calendar):
    weekday_first = Calendar("seoul", city_calendar.programs, "standard", list(reversed(city_calendar.rules)))
    eve = decide(weekday_first, kst(2026, 12, 31, 23, 30))
    assert (eve.dimming_level, eve.rule_id, eve.switch_point_id) == (30, "thursdays", "save")
    another_thursday = decide(city_calendar, kst(2026, 12, 24, 23, 30))
    assert (another_thursday.dimming_level, another_thursday.rule_id) == (30, "thursdays")


@pytest.mark.parametrize(("at", "level", "rule_id"), [
    (kst(2026, 12, 20, 2, 0), 50, None),  # night of Dec 19: before the range
    (kst(2026, 12, 21, 2, 0), 70, "winter_holidays"),  # night of Dec 20
    (kst(2027, 1, 1, 2, 0), 70, "winter_holidays"),  # night of Dec 31, across new year
    (kst(2027, 1, 7, 2, 0), 70, "winter_holidays"),  # night of Jan 6, the range's last night
    (kst(2027, 1, 8, 2, 0), 50, None),  # night of Jan 7
    (kst(2031, 1, 2, 2, 0), 70, "winter_holidays"),  # recurs every year
])
def test_yearly_range_spanning_new_year(standard_program, at, level, rule_id):
    calendar = Calendar("seoul", [standard_program, HOLIDAYS], "standard", [
        CalendarRule("winter_holidays", "holidays", date_range=YearlyDateRange((12, 20), (1, 6)))])
    decision = decide(calendar, at)
    assert (decision.dimming_level, decision.rule_id) == (level, rule_id)


def test_override_expiring_mid_program_resumes_the_calendar(standard_calendar):
    event = override("street_party", 20, 1, kst(2026, 12, 21, 22, 30), kst(2026, 12, 22, 0, 30))

    found = transitions(standard_calendar, [event], SEOUL, "Asia/Seoul",
                        kst(2026, 12, 21, 12), kst(2026, 12, 22, 12))

    assert [(t.dimming_level, t.source, t.switch_point_id, t.override_id) for t in found] == [
        (100, LevelSource.DEFAULT, "dusk_on", None),
        (20, LevelSource.OVERRIDE, None, "street_party"),
        # The 23:00 dimming step fired underneath the override; its level shows when it ends.
        (50, LevelSource.DEFAULT, "late_dim", None),
        (80, LevelSource.DEFAULT, "commute", None),
        (0, LevelSource.DEFAULT, "dawn_off", None),
    ]
    assert [t.at for t in found[1:4]] == [kst(2026, 12, 21, 22, 30), kst(2026, 12, 22, 0, 30), kst(2026, 12, 22, 5)]

    during = decide(standard_calendar, kst(2026, 12, 21, 23, 15), [event])
    assert (during.dimming_level, during.source, during.override_id, during.since) == (
        20, LevelSource.OVERRIDE, "street_party", kst(2026, 12, 21, 22, 30))
    after = decide(standard_calendar, kst(2026, 12, 22, 1, 0), [event])
    assert (after.dimming_level, after.source, after.switch_point_id, after.since) == (
        50, LevelSource.DEFAULT, "late_dim", kst(2026, 12, 22, 0, 30))


def test_override_at_the_calendar_level_changes_the_source_not_the_level(standard_calendar):
    same = override("inspection", 100, 1, kst(2026, 12, 21, 18), kst(2026, 12, 21, 19))
    found = transitions(standard_calendar, [same], SEOUL, "Asia/Seoul", kst(2026, 12, 21, 12), kst(2026, 12, 21, 22))
    assert [t.switch_point_id for t in found] == ["dusk_on"]

    during = decide(standard_calendar, kst(2026, 12, 21, 18, 30), [same])
    assert (during.source, during.since) == (LevelSource.OVERRIDE, kst(2026, 12, 21, 18))
    after = decide(standard_calendar, kst(2026, 12, 21, 19, 30), [same])
    assert (after.source, after.switch_point_id, after.since) == (
        LevelSource.DEFAULT, "dusk_on", kst(2026, 12, 21, 19))


def test_overlapping_overrides_rank_by_priority_then_newest(standard_calendar):
    overrides = [
        override("a_district_dim", 30, 1, kst(2026, 12, 21, 20), kst(2026, 12, 22, 2)),
        # Older but more important: wins while it lasts.
        override("b_police", 70, 5, kst(2026, 12, 21, 21), kst(2026, 12, 21, 22), CREATED - dt.timedelta(days=1)),
        # Same priority as a_district_dim but newer: wins while it lasts.
        override("c_concert", 90, 1, kst(2026, 12, 21, 23), kst(2026, 12, 22, 0), CREATED + dt.timedelta(hours=1)),
        # Same priority and age as a_district_dim: the greater id wins, so the result never
        # depends on the order the overrides arrive in.
        override("d_roadworks", 10, 1, kst(2026, 12, 21, 23, 30), kst(2026, 12, 22, 1)),
    ]
    for ordering in (overrides, list(reversed(overrides))):
        found = transitions(standard_calendar, ordering, SEOUL, "Asia/Seoul",
                            kst(2026, 12, 21, 19), kst(2026, 12, 22, 3))
        assert [(t.at, t.dimming_level, t.override_id) for t in found] == [
            (kst(2026, 12, 21, 20), 30, "a_district_dim"),
            (kst(2026, 12, 21, 21), 70, "b_police"),
            (kst(2026, 12, 21, 22), 30, "a_district_dim"),
            (kst(2026, 12, 21, 23), 90, "c_concert"),
            (kst(2026, 12, 22, 0), 10, "d_roadworks"),
            (kst(2026, 12, 22, 1), 30, "a_district_dim"),
            (kst(2026, 12, 22, 2), 50, None),  # the calendar's late_dim, fired at 23:00
        ]


def test_transitions_over_48_hours_with_an_override(standard_calendar):
    maintenance = override("maintenance", 0, 3, kst(2026, 12, 22, 21), kst(2026, 12, 23, 1))

    found = transitions(standard_calendar, [maintenance], SEOUL, "Asia/Seoul",
                        kst(2026, 12, 21, 12), kst(2026, 12, 23, 12))

    assert [(t.dimming_level, t.switch_point_id or t.override_id) for t in found] == [
        (100, "dusk_on"), (50, "late_dim"), (80, "commute"), (0, "dawn_off"),
        (100, "dusk_on"), (0, "maintenance"), (50, "late_dim"), (80, "commute"), (0, "dawn_off"),
    ]
    assert [t.at for t in found if t.override_id or t.switch_point_id == "late_dim"] == [
        kst(2026, 12, 21, 23), kst(2026, 12, 22, 21), kst(2026, 12, 23, 1)]
    assert all(earlier.at < later.at and earlier.dimming_level != later.dimming_level
               for earlier, later in zip(found, found[1:]))


@pytest.mark.parametrize(("place", "tz", "start"), [
    (SEOUL, "Asia/Seoul", dt.datetime(2026, 12, 20, 3, tzinfo=UTC)),
    ((52.52, 13.405), "Europe/Berlin", dt.datetime(2026, 3, 27, 0, tzinfo=UTC)),
    ((52.52, 13.405), "Europe/Berlin", dt.datetime(2026, 10, 23, 0, tzinfo=UTC)),
    ((69.65, 18.96), "Europe/Oslo", dt.datetime(2026, 5, 10, 0, tzinfo=UTC)),  # into midnight sun
    ((69.65, 18.96), "Europe/Oslo", dt.datetime(2026, 11, 22, 0, tzinfo=UTC)),  # into polar night
    ((78.22, 15.65), "Arctic/Longyearbyen", dt.datetime(2026, 2, 10, 0, tzinfo=UTC)),
    ((64.1466, -21.9426), "Atlantic/Reykjavik", dt.datetime(2026, 6, 18, 0, tzinfo=UTC)),
])
def test_level_at_agrees_with_transitions(city_calendar, place, tz, start):
    end = start + dt.timedelta(days=8)
    overrides = [override("storm", 100, 2, start + dt.timedelta(hours=30), start + dt.timedelta(hours=41)),
                 override("test", 5, 9, start + dt.timedelta(hours=36), start + dt.timedelta(hours=37))]
    found = transitions(city_calendar, overrides, place, tz, start, end)

    level = level_at(city_calendar, overrides, place, tz, start - dt.timedelta(microseconds=1)).dimming_level
    pending = list(found)
    instant = start
    while instant < end:
        while pending and pending[0].at <= instant:
            level = pending.pop(0).dimming_level
        assert level_at(city_calendar, overrides, place, tz, instant).dimming_level == level, instant
        instant += dt.timedelta(minutes=20)
    for transition in found:
        decision = level_at(city_calendar, overrides, place, tz, transition.at)
        assert (decision.dimming_level, decision.since) == (transition.dimming_level, transition.at)


def test_without_a_calendar_only_overrides_set_a_level_and_then_it_resumes():
    first = override("first", 100, 0, kst(2026, 12, 24, 20), kst(2026, 12, 24, 22))
    higher = override("higher", 40, 5, kst(2026, 12, 24, 21), kst(2026, 12, 24, 21, 30))
    assert level_at(None, [first, higher], SEOUL, "Asia/Seoul", kst(2026, 12, 24, 19)) is None
    during = level_at(None, [first, higher], SEOUL, "Asia/Seoul", kst(2026, 12, 24, 21, 10))
    assert (during.dimming_level, during.source, during.override_id) == (40, LevelSource.OVERRIDE, "higher")
    assert level_at(None, [first, higher], SEOUL, "Asia/Seoul", kst(2026, 12, 24, 22)) is None
    found = transitions(None, [first, higher], SEOUL, "Asia/Seoul", kst(2026, 12, 24, 18), kst(2026, 12, 25, 18))
    assert [(t.at, t.dimming_level, t.source) for t in found] == [
        (kst(2026, 12, 24, 20), 100, LevelSource.OVERRIDE),
        (kst(2026, 12, 24, 21), 40, LevelSource.OVERRIDE),
        (kst(2026, 12, 24, 21, 30), 100, LevelSource.OVERRIDE),
        (kst(2026, 12, 24, 22), None, LevelSource.RESUME)]
    # Starting inside the override: its level holds, and the end is the only change.
    inside = transitions(None, [first], SEOUL, "Asia/Seoul", kst(2026, 12, 24, 21), kst(2026, 12, 25, 18))
    assert [(t.at, t.dimming_level) for t in inside] == [(kst(2026, 12, 24, 22), None)]
