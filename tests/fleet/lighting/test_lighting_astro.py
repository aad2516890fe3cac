"""Sun times per night: published values, nights astral splits oddly, polar cases and the cache."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from astral import Observer
from astral import sun as astral_sun

from fleet.lighting import astro
from fleet.lighting.astro import night_sun

SEOUL = (37.5665, 126.9780)
HELSINKI = (60.1699, 24.9384)
REYKJAVIK = (64.1466, -21.9426)
TROMSO = (69.65, 18.96)
LONGYEARBYEN = (78.22, 15.65)
KST = ZoneInfo("Asia/Seoul")
OSLO = ZoneInfo("Europe/Oslo")


def _local(instant: dt.datetime | None, zone: ZoneInfo) -> dt.datetime:
    assert instant is not None
    return instant.astimezone(zone)


@pytest.mark.parametrize(("night", "sunset_kst", "sunrise_kst"), [
    # Published by KASI (Korea Astronomy and Space Science Institute) for Seoul.
    (dt.date(2026, 6, 21),
     dt.datetime(2026, 6, 21, 19, 57, tzinfo=KST), dt.datetime(2026, 6, 22, 5, 11, tzinfo=KST)),
    (dt.date(2026, 12, 21),
     dt.datetime(2026, 12, 21, 17, 17, tzinfo=KST), dt.datetime(2026, 12, 22, 7, 44, tzinfo=KST)),
])
def test_seoul_sun_times_match_published_values(night, sunset_kst, sunrise_kst):
    seoul_sun = night_sun(SEOUL, "Asia/Seoul", night)

    assert abs(seoul_sun.sunset - sunset_kst) <= dt.timedelta(minutes=1)
    assert abs(seoul_sun.sunrise - sunrise_kst) <= dt.timedelta(minutes=1)
    assert not seoul_sun.midnight_sun and seoul_sun.civil_dusk is None and seoul_sun.civil_dawn is None
    # Rounding the coordinates for the cache costs seconds, not minutes.
    exact = astral_sun.sunset(Observer(*SEOUL), night, tzinfo=KST)
    assert abs(seoul_sun.sunset - exact) <= dt.timedelta(seconds=30)


def test_seoul_sunset_stays_in_a_sane_range_all_year():
    for day_of_year in range(0, 365, 7):
        night = dt.date(2026, 1, 1) + dt.timedelta(days=day_of_year)
        sunset = _local(night_sun(SEOUL, "Asia/Seoul", night).sunset, KST)
        assert sunset.date() == night
        assert dt.time(17, 10) <= sunset.time() <= dt.time(20, 0)


def test_reykjavik_sunset_after_midnight_belongs_to_the_evening_before():
    zone = ZoneInfo("Atlantic/Reykjavik")
    # astral answers per calendar date: "sunset on June 21" is the one just after midnight,
    # which ends the evening of June 20.
    astral_answer = astral_sun.sunset(Observer(*REYKJAVIK), dt.date(2026, 6, 21), tzinfo=zone)
    assert astral_answer.date() == dt.date(2026, 6, 21) and astral_answer.hour == 0

    reykjavik_sun = night_sun(REYKJAVIK, "Atlantic/Reykjavik", dt.date(2026, 6, 21))

    sunset, sunrise = _local(reykjavik_sun.sunset, zone), _local(reykjavik_sun.sunrise, zone)
    assert sunset.date() == dt.date(2026, 6, 22) and sunset.hour == 0
    assert sunrise.date() == dt.date(2026, 6, 22) and dt.time(2, 50) <= sunrise.time() <= dt.time(3, 5)
    assert sunset < sunrise


def test_helsinki_midsummer_night_is_short_but_real():
    zone = ZoneInfo("Europe/Helsinki")
    helsinki_sun = night_sun(HELSINKI, "Europe/Helsinki", dt.date(2026, 6, 21))

    assert not helsinki_sun.midnight_sun
    assert dt.time(22, 45) <= _local(helsinki_sun.sunset, zone).time() <= dt.time(22, 55)
    assert dt.time(3, 50) <= _local(helsinki_sun.sunrise, zone).time() <= dt.time(4, 0)


def test_tromso_midsummer_is_midnight_sun():
    with pytest.raises(ValueError):
        astral_sun.sunset(Observer(*TROMSO), dt.date(2026, 6, 21), tzinfo=OSLO)

    tromso_sun = night_sun(TROMSO, "Europe/Oslo", dt.date(2026, 6, 21))

    assert tromso_sun.midnight_sun
    assert tromso_sun.sunset is tromso_sun.sunrise is tromso_sun.civil_dusk is tromso_sun.civil_dawn is None
    # Solar noon at 18.96°E in CEST is about 12:46, so the sun is lowest about 00:46.
    solar_midnight = _local(tromso_sun.solar_midnight, OSLO)
    assert solar_midnight.date() == dt.date(2026, 6, 22)
    assert dt.time(0, 40) <= solar_midnight.time() <= dt.time(0, 52)


def test_night_astral_cannot_place_next_to_midnight_sun_is_still_found():
    observer = Observer(*TROMSO)
    with pytest.raises(ValueError):  # "Unable to find a sunrise time on the date specified"
        astral_sun.sunrise(observer, dt.date(2026, 5, 14), tzinfo=OSLO)

    short_night = night_sun(TROMSO, "Europe/Oslo", dt.date(2026, 5, 13))

    assert not short_night.midnight_sun
    assert dt.time(23, 15) <= _local(short_night.sunset, OSLO).time() <= dt.time(23, 35)
    sunrise = _local(short_night.sunrise, OSLO)
    assert sunrise.date() == dt.date(2026, 5, 14) and dt.time(1, 40) <= sunrise.time() <= dt.time(2, 5)


def test_tromso_polar_night_falls_back_to_civil_twilight():
    observer = Observer(*TROMSO)
    with pytest.raises(ValueError):
        astral_sun.sunset(observer, dt.date(2026, 12, 21), tzinfo=OSLO)

    tromso_sun = night_sun(TROMSO, "Europe/Oslo", dt.date(2026, 12, 21))

    assert not tromso_sun.midnight_sun and tromso_sun.sunset is None and tromso_sun.sunrise is None
    # We bisect the geometric -6° crossing; astral adds a little refraction, and the sun
    # moves slowly there, so the two agree within a couple of minutes.
    expected_dusk = astral_sun.dusk(observer, dt.date(2026, 12, 21), tzinfo=OSLO)
    expected_dawn = astral_sun.dawn(observer, dt.date(2026, 12, 22), tzinfo=OSLO)
    assert abs(tromso_sun.civil_dusk - expected_dusk) <= dt.timedelta(minutes=2)
    assert abs(tromso_sun.civil_dawn - expected_dawn) <= dt.timedelta(minutes=2)
    assert dt.time(13, 45) <= _local(tromso_sun.civil_dusk, OSLO).time() <= dt.time(14, 5)


def test_longyearbyen_polar_night_has_not_even_civil_twilight():
    polar = night_sun(LONGYEARBYEN, "Arctic/Longyearbyen", dt.date(2026, 12, 21))

    assert not polar.midnight_sun
    assert polar.sunset is polar.sunrise is polar.civil_dusk is polar.civil_dawn is None


@pytest.mark.parametrize(("place", "tz"), [
    (TROMSO, "Europe/Oslo"), (LONGYEARBYEN, "Arctic/Longyearbyen"), (REYKJAVIK, "Atlantic/Reykjavik"),
    (HELSINKI, "Europe/Helsinki"), ((-77.85, 166.67), "Antarctica/McMurdo"), (SEOUL, "Asia/Seoul"),
])
def test_every_night_of_a_year_is_consistent(place, tz):
    midnight_sun_months, fallback_months = set(), set()
    for day_of_year in range(365):
        night = dt.date(2026, 1, 1) + dt.timedelta(days=day_of_year)
        facts = night_sun(place, tz, night)
        night_end = facts.solar_noon + dt.timedelta(days=1)
        if facts.midnight_sun:
            midnight_sun_months.add(night.month)
            continue
        dusk = facts.sunset or facts.civil_dusk
        dawn = facts.sunrise or facts.civil_dawn
        if facts.sunset is None or facts.sunrise is None:
            fallback_months.add(night.month)
        for instant in (dusk, dawn):
            assert instant is None or facts.solar_noon < instant < night_end
        if dusk and dawn:
            assert dusk < dawn
    # The polar cases happen in the right season of the right hemisphere, and only there.
    if place[0] > 66.5:
        assert midnight_sun_months <= {4, 5, 6, 7, 8} and fallback_months <= {1, 2, 10, 11, 12}
        assert midnight_sun_months and fallback_months
    elif place[0] < -66.5:
        assert midnight_sun_months <= {1, 2, 10, 11, 12} and fallback_months <= {4, 5, 6, 7, 8, 9}
    else:
        assert not midnight_sun_months and not fallback_months


def test_nearby_lights_share_one_sun_computation():
    night = dt.date(2031, 3, 3)  # a date no other test asks for
    before = astro.cache_info()
    for step in range(50):  # 50 lights along a 40 m street
        night_sun((37.5665 + step * 0.000008, 126.9780), "Asia/Seoul", night)
    after = astro.cache_info()

    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 49


def test_rejects_coordinates_out_of_range():
    with pytest.raises(ValueError):
        night_sun((91.0, 0.0), "UTC", dt.date(2026, 1, 1))
