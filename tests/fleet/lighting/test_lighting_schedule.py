"""level_at, transitions and next_transition on fixed clocks: cities, DST nights and polar seasons."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from astral import Observer
from astral import sun as astral_sun

from fleet.lighting import astro
from fleet.lighting.models import ControlProgram, SwitchPoint
from fleet.lighting.schedule import LevelSource, level_at, next_transition, transitions

UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
SEOUL, KST = (37.5665, 126.9780), ZoneInfo("Asia/Seoul")
BERLIN, CET = (52.52, 13.405), ZoneInfo("Europe/Berlin")
TROMSO, OSLO = (69.65, 18.96), ZoneInfo("Europe/Oslo")
LONGYEARBYEN = (78.22, 15.65)
HELSINKI, EET = (60.1699, 24.9384), ZoneInfo("Europe/Helsinki")
REYKJAVIK, GMT = (64.1466, -21.9426), ZoneInfo("Atlantic/Reykjavik")


def local(zone: ZoneInfo, *fields: int) -> dt.datetime:
    return dt.datetime(*fields, tzinfo=zone)


def steps(found) -> list[tuple[int, str | None]]:
    return [(transition.dimming_level, transition.switch_point_id) for transition in found]


def astral_event(event, place, zone: ZoneInfo, day: dt.date) -> dt.datetime:
    return event(Observer(*place), day, tzinfo=zone)


def test_seoul_summer_night(standard_calendar):
    found = transitions(standard_calendar, [], SEOUL, "Asia/Seoul",
                        local(KST, 2026, 6, 21, 12), local(KST, 2026, 6, 22, 12))

    # Sunrise-15 (04:56) comes before the 05:00 commute boost, which is skipped in daylight.
    assert steps(found) == [(100, "dusk_on"), (50, "late_dim"), (0, "dawn_off")]
    sunset = astral_event(astral_sun.sunset, SEOUL, KST, dt.date(2026, 6, 21))
    sunrise = astral_event(astral_sun.sunrise, SEOUL, KST, dt.date(2026, 6, 22))
    assert abs(found[0].at - (sunset + dt.timedelta(minutes=15))) < MINUTE
    assert local(KST, 2026, 6, 21, 20, 10) <= found[0].at <= local(KST, 2026, 6, 21, 20, 14)
    assert found[1].at == local(KST, 2026, 6, 21, 23)
    assert abs(found[2].at - (sunrise - dt.timedelta(minutes=15))) < MINUTE
    assert all(t.source is LevelSource.DEFAULT and t.program_id == "standard" for t in found)
    assert all(t.at.tzinfo is UTC for t in found)


def test_seoul_winter_night(standard_calendar):
    found = transitions(standard_calendar, [], SEOUL, "Asia/Seoul",
                        local(KST, 2026, 12, 21, 12), local(KST, 2026, 12, 22, 12))

    assert steps(found) == [(100, "dusk_on"), (50, "late_dim"), (80, "commute"), (0, "dawn_off")]
    assert local(KST, 2026, 12, 21, 17, 30) <= found[0].at <= local(KST, 2026, 12, 21, 17, 34)
    assert found[2].at == local(KST, 2026, 12, 22, 5)
    sunrise = astral_event(astral_sun.sunrise, SEOUL, KST, dt.date(2026, 12, 22))
    assert abs(found[3].at - (sunrise - dt.timedelta(minutes=15))) < MINUTE


def test_level_at_in_the_seoul_night(standard_calendar):
    def at(*fields: int):
        return level_at(standard_calendar, [], SEOUL, "Asia/Seoul", local(KST, *fields))

    morning = at(2026, 6, 22, 3, 0)
    assert (morning.dimming_level, morning.source, morning.switch_point_id) == (50, LevelSource.DEFAULT, "late_dim")
    assert morning.since == local(KST, 2026, 6, 21, 23) and morning.program_id == "standard"
    assert morning.rule_id is None and morning.override_id is None
    assert at(2026, 6, 21, 23, 0).since == local(KST, 2026, 6, 21, 23)  # the instant of change counts
    afternoon = at(2026, 6, 22, 15, 0)  # next night's program has not fired yet
    assert (afternoon.dimming_level, afternoon.switch_point_id) == (0, "dawn_off")
    assert local(KST, 2026, 6, 22, 4, 54) <= afternoon.since <= local(KST, 2026, 6, 22, 4, 58)


DST_PROGRAM = ControlProgram("dst_fixed", [
    SwitchPoint.at_local_time("on", "22:00", 100),
    SwitchPoint.at_local_time("deep_night", "02:30", 40),
    SwitchPoint.at_local_time("off", "06:00", 0),
])


@pytest.mark.parametrize(("night", "expected"), [
    # 02:30 does not exist on 2026-03-29: it fires at 03:00 CEST, the first instant after the gap.
    (dt.date(2026, 3, 28), [dt.datetime(2026, 3, 28, 21, 0, tzinfo=UTC), dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
                            dt.datetime(2026, 3, 29, 4, 0, tzinfo=UTC)]),
    # 02:30 happens twice on 2026-10-25: it fires once, at the first (CEST) occurrence.
    (dt.date(2026, 10, 24), [dt.datetime(2026, 10, 24, 20, 0, tzinfo=UTC),
                             dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
                             dt.datetime(2026, 10, 25, 5, 0, tzinfo=UTC)]),
])
def test_berlin_dst_nights(calendar_of, night, expected):
    start = local(CET, night.year, night.month, night.day, 12)
    found = transitions(calendar_of(DST_PROGRAM), [], BERLIN, "Europe/Berlin", start, start + dt.timedelta(days=2))

    assert [t.at for t in found[:3]] == expected
    assert steps(found[:3]) == [(100, "on"), (40, "deep_night"), (0, "off")]


def test_second_pass_through_the_fall_back_hour_does_not_fire_again(calendar_of):
    second_0230 = dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET, after falling back
    decision = level_at(calendar_of(DST_PROGRAM), [], BERLIN, "Europe/Berlin", second_0230)
    assert (decision.dimming_level, decision.switch_point_id) == (40, "deep_night")
    assert decision.since == dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_berlin_dst_night_with_sun_points(standard_calendar):
    found = transitions(standard_calendar, [], BERLIN, "Europe/Berlin",
                        local(CET, 2026, 3, 28, 12), local(CET, 2026, 3, 29, 12))

    assert steps(found) == [(100, "dusk_on"), (50, "late_dim"), (80, "commute"), (0, "dawn_off")]
    assert found[1].at == dt.datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # 23:00 CET
    assert found[2].at == dt.datetime(2026, 3, 29, 3, 0, tzinfo=UTC)  # 05:00 CEST
    sunrise = astral_event(astral_sun.sunrise, BERLIN, CET, dt.date(2026, 3, 29))
    assert abs(found[3].at - (sunrise - dt.timedelta(minutes=15))) < MINUTE


@pytest.mark.parametrize("night", [dt.date(2026, 3, 28), dt.date(2026, 10, 24)])
def test_seoul_has_no_dst(calendar_of, night):
    start = local(KST, night.year, night.month, night.day, 12)
    found = transitions(calendar_of(DST_PROGRAM), [], SEOUL, "Asia/Seoul", start, start + dt.timedelta(days=1))
    assert [t.at.astimezone(KST).time() for t in found] == [dt.time(22), dt.time(2, 30), dt.time(6)]


def test_tromso_midsummer_keeps_the_lamps_off(standard_calendar):
    found = transitions(standard_calendar, [], TROMSO, "Europe/Oslo",
                        local(OSLO, 2026, 6, 20, 12), local(OSLO, 2026, 6, 22, 12))
    assert found == []

    decision = level_at(standard_calendar, [], TROMSO, "Europe/Oslo", local(OSLO, 2026, 6, 21, 1, 0))
    assert (decision.dimming_level, decision.switch_point_id) == (0, "dawn_off")
    # The whole sun-bracketed span fired together at solar midnight, about 00:46.
    assert local(OSLO, 2026, 6, 21, 0, 40) <= decision.since <= local(OSLO, 2026, 6, 21, 0, 52)


def test_tromso_midsummer_still_runs_clock_points_outside_the_dark_span(calendar_of):
    decorative = ControlProgram("decorative", [
        SwitchPoint.at_local_time("deco", "18:00", 20),
        SwitchPoint.at_sunset("dusk_on", 100),
        SwitchPoint.at_sunrise("dawn_off", 0),
    ])
    found = transitions(calendar_of(decorative), [], TROMSO, "Europe/Oslo",
                        local(OSLO, 2026, 6, 21, 12), local(OSLO, 2026, 6, 22, 12))

    assert steps(found) == [(20, "deco"), (0, "dawn_off")]
    assert found[0].at == local(OSLO, 2026, 6, 21, 18)
    assert local(OSLO, 2026, 6, 22, 0, 40) <= found[1].at <= local(OSLO, 2026, 6, 22, 0, 52)

    clock_only = ControlProgram("clock", [SwitchPoint.at_local_time("on", "22:00", 60),
                                          SwitchPoint.at_local_time("off", "04:00", 0)])
    found = transitions(calendar_of(clock_only), [], TROMSO, "Europe/Oslo",
                        local(OSLO, 2026, 6, 21, 12), local(OSLO, 2026, 6, 22, 12))
    assert [(t.at, t.dimming_level) for t in found] == [(local(OSLO, 2026, 6, 21, 22), 60),
                                                        (local(OSLO, 2026, 6, 22, 4), 0)]


def test_tromso_polar_night_follows_civil_twilight(standard_calendar):
    found = transitions(standard_calendar, [], TROMSO, "Europe/Oslo",
                        local(OSLO, 2026, 12, 21, 12), local(OSLO, 2026, 12, 22, 12))

    assert steps(found) == [(100, "dusk_on"), (50, "late_dim"), (80, "commute"), (0, "dawn_off")]
    civil_dusk = astral_event(astral_sun.dusk, TROMSO, OSLO, dt.date(2026, 12, 21))
    civil_dawn = astral_event(astral_sun.dawn, TROMSO, OSLO, dt.date(2026, 12, 22))
    assert abs(found[0].at - (civil_dusk + dt.timedelta(minutes=15))) < 3 * MINUTE
    assert abs(found[3].at - (civil_dawn - dt.timedelta(minutes=15))) < 3 * MINUTE


def test_longyearbyen_polar_night_never_switches_off(standard_calendar):
    start = local(OSLO, 2026, 12, 20, 12)
    found = transitions(standard_calendar, [], LONGYEARBYEN, "Arctic/Longyearbyen",
                        start, start + dt.timedelta(days=2))

    assert steps(found) == [(100, "dusk_on"), (50, "late_dim"), (80, "commute")] * 2
    assert found[0].at == start and found[3].at == start + dt.timedelta(days=1)
    noon = level_at(standard_calendar, [], LONGYEARBYEN, "Arctic/Longyearbyen", local(OSLO, 2026, 12, 21, 12, 30))
    assert (noon.dimming_level, noon.since) == (100, local(OSLO, 2026, 12, 21, 12))


def test_helsinki_midsummer_night_is_short(standard_calendar):
    found = transitions(standard_calendar, [], HELSINKI, "Europe/Helsinki",
                        local(EET, 2026, 6, 21, 12), local(EET, 2026, 6, 22, 12))

    # Sunset+15 falls after 23:00, so the lamps light directly at the late level.
    assert steps(found) == [(50, "late_dim"), (0, "dawn_off")]
    assert local(EET, 2026, 6, 21, 23, 0) < found[0].at < local(EET, 2026, 6, 21, 23, 10)
    assert local(EET, 2026, 6, 22, 3, 30) < found[1].at < local(EET, 2026, 6, 22, 3, 45)


def test_reykjavik_sunset_after_midnight_runs_the_evening_before(standard_calendar):
    found = transitions(standard_calendar, [], REYKJAVIK, "Atlantic/Reykjavik",
                        local(GMT, 2026, 6, 21, 12), local(GMT, 2026, 6, 22, 12))

    assert steps(found) == [(50, "late_dim"), (0, "dawn_off")]
    assert local(GMT, 2026, 6, 22, 0, 10) < found[0].at < local(GMT, 2026, 6, 22, 0, 25)
    assert local(GMT, 2026, 6, 22, 2, 35) < found[1].at < local(GMT, 2026, 6, 22, 2, 50)


def test_next_transition_is_strictly_after(standard_calendar):
    def following(*fields: int):
        return next_transition(standard_calendar, [], SEOUL, "Asia/Seoul", local(KST, *fields))

    assert following(2026, 12, 21, 20, 0).at == local(KST, 2026, 12, 21, 23)
    after_dim = following(2026, 12, 21, 23, 0)
    assert (after_dim.at, after_dim.dimming_level) == (local(KST, 2026, 12, 22, 5), 80)


def test_next_transition_waits_out_the_midnight_sun(standard_calendar):
    midsummer = local(OSLO, 2026, 6, 21, 12)
    assert next_transition(standard_calendar, [], TROMSO, "Europe/Oslo", midsummer) is None

    first_dark = next_transition(standard_calendar, [], TROMSO, "Europe/Oslo", midsummer,
                                 within=dt.timedelta(days=60))
    assert first_dark is not None and first_dark.dimming_level > 0
    assert local(OSLO, 2026, 7, 24) < first_dark.at < local(OSLO, 2026, 8, 3)


def test_times_must_be_timezone_aware(standard_calendar):
    naive = dt.datetime(2026, 6, 21, 12, 0)
    with pytest.raises(ValueError):
        level_at(standard_calendar, [], SEOUL, "Asia/Seoul", naive)
    with pytest.raises(ValueError):
        transitions(standard_calendar, [], SEOUL, "Asia/Seoul", naive, naive + dt.timedelta(hours=1))
    with pytest.raises(ValueError):
        next_transition(standard_calendar, [], SEOUL, "Asia/Seoul", naive)


def test_empty_or_reversed_span_has_no_transitions(standard_calendar):
    start = local(KST, 2026, 6, 21, 12)
    assert transitions(standard_calendar, [], SEOUL, "Asia/Seoul", start, start) == []
    assert transitions(standard_calendar, [], SEOUL, "Asia/Seoul", start, start - dt.timedelta(days=1)) == []


def test_a_district_of_lights_shares_its_sun_computations(standard_calendar):
    start = local(KST, 2032, 4, 10, 12)  # nights no other test asks for
    before = astro.cache_info()
    for light in range(2000):
        location = (37.5661 + (light % 40) * 0.0001, 126.9781 + (light // 40) * 0.00008)
        transitions(standard_calendar, [], location, "Asia/Seoul", start, start + dt.timedelta(days=2))
    after = astro.cache_info()
    # 3 nights (plus the one before) x at most 4 rounded cells, whatever the number of lights.
    assert after.misses - before.misses <= 16
