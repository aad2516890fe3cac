"""Validation of programs, calendars and overrides, and which rule picks a night's program."""

from __future__ import annotations

import datetime as dt

import pytest

from fleet.errors import ValidationFailed
from fleet.lighting.models import (Anchor, Calendar, CalendarRule, ControlProgram, DateRange,
                                   Override, SwitchPoint, YearlyDateRange)

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _fields(failure: pytest.ExceptionInfo[ValidationFailed]) -> set[str]:
    return {error.field for error in failure.value.errors}


def _program(program_id: str, level: int = 100) -> ControlProgram:
    return ControlProgram(program_id, [SwitchPoint.at_sunset("on", level), SwitchPoint.at_sunrise("off", 0)])


# Switch points and programs

@pytest.mark.parametrize("level", [-1, 101, 50.5, True, "80"])
def test_dimming_level_must_be_a_whole_percentage(level):
    with pytest.raises(ValidationFailed) as failure:
        SwitchPoint.at_sunset("on", level)
    assert _fields(failure) == {"dimming_level"}


@pytest.mark.parametrize("level", [0, 1, 100])
def test_dimming_level_bounds_are_inclusive(level):
    assert SwitchPoint.at_local_time("p", "20:00", level).dimming_level == level


@pytest.mark.parametrize("offset", [-721, 721, 30.5])
def test_offsets_stay_within_twelve_hours(offset):
    with pytest.raises(ValidationFailed) as failure:
        SwitchPoint.at_sunrise("off", 0, offset_minutes=offset)
    assert _fields(failure) == {"offset_minutes"}


def test_twelve_hour_offsets_are_allowed():
    assert SwitchPoint.at_sunset("early", 10, offset_minutes=-720).offset_minutes == -720
    assert SwitchPoint.at_sunrise("late", 0, offset_minutes=720).offset_minutes == 720


def test_local_time_is_hh_mm():
    assert SwitchPoint.at_local_time("late", "23:30", 50).local_time == dt.time(23, 30)
    for bad in ("25:00", "late evening", dt.time(23, 30, 15), dt.time(23, 30, tzinfo=UTC)):
        with pytest.raises(ValidationFailed) as failure:
            SwitchPoint.at_local_time("late", bad, 50)
        assert _fields(failure) == {"local_time"}


def test_anchor_and_its_fields_must_agree():
    with pytest.raises(ValidationFailed) as failure:
        SwitchPoint("p", Anchor.LOCAL_TIME, 50, local_time=dt.time(22, 0), offset_minutes=10)
    assert _fields(failure) == {"offset_minutes"}
    with pytest.raises(ValidationFailed) as failure:
        SwitchPoint("p", "sunset", 50, local_time=dt.time(22, 0))
    assert _fields(failure) == {"local_time"}
    assert SwitchPoint("p", "sunset", 50).anchor is Anchor.SUNSET


def test_program_needs_a_switch_point():
    with pytest.raises(ValidationFailed) as failure:
        ControlProgram("empty", [])
    assert _fields(failure) == {"switch_points"}


def test_program_rejects_duplicate_switch_point_ids():
    with pytest.raises(ValidationFailed, match="'twice'"):
        ControlProgram("twice", [SwitchPoint.at_sunset("on", 100), SwitchPoint.at_local_time("on", "23:00", 50)])


@pytest.mark.parametrize("points", [
    # a sunrise-based point before a sunset-based one
    [SwitchPoint.at_sunrise("off", 0), SwitchPoint.at_sunset("on", 100)],
    # a morning time before an evening one
    [SwitchPoint.at_local_time("early", "05:00", 80), SwitchPoint.at_local_time("late", "23:00", 50)],
    # an evening time after a sunrise-based point
    [SwitchPoint.at_sunset("on", 100), SwitchPoint.at_sunrise("off", 0),
     SwitchPoint.at_local_time("deco", "18:00", 20)],
    # local times not increasing through the night
    [SwitchPoint.at_local_time("b", "23:00", 50), SwitchPoint.at_local_time("a", "22:00", 80)],
    # two sunset offsets out of order
    [SwitchPoint.at_sunset("full", 100, 30), SwitchPoint.at_sunset("half", 50, 0)],
])
def test_program_lists_points_in_night_order(points):
    with pytest.raises(ValidationFailed):
        ControlProgram("unordered", points)


def test_night_order_spans_midnight():
    program = ControlProgram("late_shift", [
        SwitchPoint.at_local_time("deco", "18:00", 20),
        SwitchPoint.at_sunset("on", 100),
        SwitchPoint.at_local_time("late", "23:30", 60),
        SwitchPoint.at_local_time("night", "01:00", 30),
        SwitchPoint.at_sunrise("off", 0, offset_minutes=-10),
        SwitchPoint.at_local_time("after", "09:00", 0),
    ])
    assert program.follows_sun
    assert not ControlProgram("clock", [SwitchPoint.at_local_time("on", "19:00", 100)]).follows_sun


# Date ranges and rules

@pytest.mark.parametrize(("day", "inside"), [
    (dt.date(2026, 12, 19), False), (dt.date(2026, 12, 20), True), (dt.date(2026, 12, 31), True),
    (dt.date(2027, 1, 1), True), (dt.date(2027, 1, 6), True), (dt.date(2027, 1, 7), False),
    (dt.date(2031, 1, 3), True), (dt.date(2026, 7, 1), False),
])
def test_yearly_range_spanning_new_year(day, inside):
    assert YearlyDateRange((12, 20), (1, 6)).contains(day) is inside


def test_yearly_range_within_a_year_and_leap_day():
    summer = YearlyDateRange((6, 1), (8, 31))
    assert summer.contains(dt.date(2026, 6, 1)) and summer.contains(dt.date(2026, 8, 31))
    assert not summer.contains(dt.date(2026, 9, 1))
    assert YearlyDateRange([2, 29], [2, 29]).contains(dt.date(2028, 2, 29))
    with pytest.raises(ValidationFailed) as failure:
        YearlyDateRange((2, 30), (13, 1))
    assert _fields(failure) == {"first", "last"}


def test_date_range_with_explicit_years_does_not_recur():
    holidays = DateRange(dt.date(2026, 12, 20), dt.date(2027, 1, 6))
    assert holidays.contains(dt.date(2026, 12, 20)) and holidays.contains(dt.date(2027, 1, 6))
    assert not holidays.contains(dt.date(2027, 12, 25))
    with pytest.raises(ValidationFailed):
        DateRange(dt.date(2027, 1, 6), dt.date(2026, 12, 20))


def test_rule_matches_only_when_every_criterion_it_sets_matches():
    december_weekends = CalendarRule("december_weekends", "bright",
                                     date_range=YearlyDateRange((12, 1), (12, 31)), weekdays={6, 7})
    assert december_weekends.matches(dt.date(2026, 12, 5))  # a Saturday
    assert not december_weekends.matches(dt.date(2026, 12, 7))  # a Monday
    assert not december_weekends.matches(dt.date(2026, 11, 28))  # a Saturday in November


def test_rule_must_set_a_criterion_and_valid_weekdays():
    with pytest.raises(ValidationFailed) as failure:
        CalendarRule("always", "bright")
    assert _fields(failure) == {"rule"}
    with pytest.raises(ValidationFailed) as failure:
        CalendarRule("bad_days", "bright", weekdays={0, 8})
    assert _fields(failure) == {"weekdays"}


# Calendars

def test_calendar_first_matching_rule_wins_and_default_catches_the_rest():
    calendar = Calendar("city", [_program("standard"), _program("festival"), _program("weekend", 80)],
                        "standard", [
                            CalendarRule("new_year", "festival", dates={dt.date(2026, 12, 31)}),
                            CalendarRule("weekends", "weekend", weekdays={5, 6}),
                            CalendarRule("winter_fridays", "festival", weekdays={5}),  # shadowed
                        ])

    program, rule = calendar.select(dt.date(2026, 12, 31))
    assert (program.program_id, rule.rule_id) == ("festival", "new_year")
    program, rule = calendar.select(dt.date(2027, 1, 1))  # a Friday: the earlier weekend rule wins
    assert (program.program_id, rule.rule_id) == ("weekend", "weekends")
    program, rule = calendar.select(dt.date(2027, 1, 4))
    assert (program.program_id, rule) == ("standard", None)


def test_calendar_validates_its_references():
    with pytest.raises(ValidationFailed) as failure:
        Calendar("broken", [_program("a"), _program("a")], "missing", [
            CalendarRule("r", "ghost", weekdays={1}), CalendarRule("r", "a", weekdays={2})])
    assert _fields(failure) == {"programs", "default_program_id", "rules", "rules[0].program_id"}


def test_models_are_hashable_values():
    assert _program("a") == _program("a")
    assert hash(Calendar("c", [_program("a")], "a")) == hash(Calendar("c", [_program("a")], "a"))


# Overrides

def _override(**changes) -> Override:
    fields = dict(override_id="o1", scope="district:harbour", dimming_level=30, priority=1,
                  starts_at=NOW, ends_at=NOW + dt.timedelta(hours=2), created_at=NOW)
    return Override(**{**fields, **changes})


def test_override_is_active_on_a_half_open_span():
    override = _override()
    assert not override.is_active(NOW - dt.timedelta(microseconds=1))
    assert override.is_active(NOW)
    assert override.is_active(NOW + dt.timedelta(hours=2) - dt.timedelta(microseconds=1))
    assert not override.is_active(NOW + dt.timedelta(hours=2))


def test_override_times_are_normalised_to_utc():
    kst = dt.timezone(dt.timedelta(hours=9))
    override = _override(starts_at=dt.datetime(2026, 3, 1, 21, 0, tzinfo=kst))
    assert override.starts_at == NOW and override.starts_at.tzinfo is UTC


@pytest.mark.parametrize(("changes", "field"), [
    ({"starts_at": dt.datetime(2026, 3, 1, 12, 0)}, "starts_at"),
    ({"created_at": dt.datetime(2026, 3, 1, 12, 0)}, "created_at"),
    ({"ends_at": NOW}, "ends_at"),
    ({"dimming_level": 120}, "dimming_level"),
])
def test_override_validation(changes, field):
    with pytest.raises(ValidationFailed) as failure:
        _override(**changes)
    assert _fields(failure) == {field}


def test_override_precedence_is_priority_then_newest_then_id():
    low_new = _override(override_id="a", priority=1, created_at=NOW + dt.timedelta(hours=1))
    high_old = _override(override_id="b", priority=2, created_at=NOW)
    high_new = _override(override_id="c", priority=2, created_at=NOW + dt.timedelta(minutes=5))
    high_new_twin = _override(override_id="d", priority=2, created_at=NOW + dt.timedelta(minutes=5))
    ranked = sorted([high_new_twin, low_new, high_old, high_new], key=lambda override: override.precedence)
    assert [override.override_id for override in ranked] == ["a", "b", "c", "d"]
