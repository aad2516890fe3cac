"""Lamp failure, day burner, dark at night, level not following, power anomaly, energy backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleet.alarms.models import AlarmType
from fleet.alarms.rules.models import Target, Value
from fleet.alarms.rules.streetlight import (LAMP_ENERGY, LAMP_POWER, SUPPLY_ENERGY, dark_at_night,
                                            day_burner, daylight_minutes, energy_backwards,
                                            lamp_failure, level_not_following, power_anomaly)
from tests.fleet.alarms.conftest import MIDNIGHT_KST, NOON_KST, context, observed, with_previous

# Seoul on 2026-06-21: sunset about 19:57 KST (10:57 UTC).
SUNSET = datetime(2026, 6, 21, 10, 57, tzinfo=UTC)


def test_daylight_minutes_are_positive_by_day_and_negative_at_night():
    ctx = context("streetlight")
    # Before solar noon (12:33 KST) daylight counts from sunrise (05:11 KST).
    assert daylight_minutes(ctx, NOON_KST) == pytest.approx(409, abs=5)
    assert daylight_minutes(ctx, NOON_KST + timedelta(hours=2)) == pytest.approx(357, abs=5)
    assert daylight_minutes(ctx, MIDNIGHT_KST) == pytest.approx(-243, abs=5)
    assert daylight_minutes(ctx, SUNSET - timedelta(minutes=20)) == pytest.approx(20, abs=3)
    # Early morning, after sunrise: counted from sunrise.
    assert daylight_minutes(ctx, datetime(2026, 6, 20, 21, 11, tzinfo=UTC)) == pytest.approx(60, abs=3)


def test_daylight_minutes_under_the_midnight_sun_and_the_polar_night():
    tromso = context("streetlight", lat=69.65, lon=18.96, timezone="Europe/Oslo")
    assert daylight_minutes(tromso, datetime(2026, 6, 21, 23, 0, tzinfo=UTC)) == float("inf")
    # Polar night: civil dusk and dawn stand in for sunset and sunrise, as in the schedules.
    assert daylight_minutes(tromso, datetime(2026, 12, 21, 23, 0, tzinfo=UTC)) < -500
    assert daylight_minutes(tromso, datetime(2026, 12, 21, 11, 0, tzinfo=UTC)) < 180


def test_lamp_failure_follows_the_controllers_flag():
    ctx = context("streetlight")
    found = lamp_failure(ctx, observed(NOON_KST, p3416_0_5=True), NOON_KST)
    assert (found.type, found.present) == (AlarmType.LAMP_FAILURE, True)
    assert lamp_failure(ctx, observed(NOON_KST, p3416_0_5=False), NOON_KST).present is False
    assert lamp_failure(ctx, observed(NOON_KST), NOON_KST) is None


def test_day_burner_lit_in_daylight_beyond_the_tolerance():
    ctx = context("streetlight")
    found = day_burner(ctx, observed(NOON_KST, p3416_0_3=100), NOON_KST)
    assert (found.type, found.present) == (AlarmType.DAY_BURNER, True)
    assert day_burner(ctx, observed(NOON_KST, p3416_0_3=0), NOON_KST).present is False
    # Lit 20 minutes before sunset is within the 30 minutes' tolerance.
    before_sunset = SUNSET - timedelta(minutes=20)
    assert day_burner(ctx, observed(before_sunset, p3416_0_3=100), before_sunset) is None
    assert day_burner(ctx, observed(MIDNIGHT_KST, p3416_0_3=100), MIDNIGHT_KST).present is False


def test_day_burner_from_power_alone_and_not_when_the_schedule_lights_it():
    ctx = context("streetlight")
    assert day_burner(ctx, observed(NOON_KST, p3416_0_46=88.0), NOON_KST).present is True
    assert day_burner(ctx, observed(NOON_KST, p3416_0_46=1.5), NOON_KST).present is False
    commanded = context("streetlight", target=Target(60, NOON_KST - timedelta(hours=1)))
    assert day_burner(commanded, observed(NOON_KST, p3416_0_3=60), NOON_KST).present is False  # clears an earlier alarm
    assert day_burner(ctx, observed(NOON_KST), NOON_KST) is None


def test_dark_at_night_without_a_schedule_follows_the_sun():
    ctx = context("streetlight")
    found = dark_at_night(ctx, observed(MIDNIGHT_KST, p3416_0_3=0), MIDNIGHT_KST)
    assert (found.type, found.present) == (AlarmType.DARK_AT_NIGHT, True)
    assert dark_at_night(ctx, observed(MIDNIGHT_KST, p3416_0_3=50), MIDNIGHT_KST).present is False
    assert dark_at_night(ctx, observed(NOON_KST, p3416_0_3=0), NOON_KST).present is False
    after_sunset = SUNSET + timedelta(minutes=10)  # within 15 minutes' tolerance
    assert dark_at_night(ctx, observed(after_sunset, p3416_0_3=0), after_sunset) is None


def test_dark_at_night_by_the_schedules_target_and_lit_without_power():
    lit_since = MIDNIGHT_KST - timedelta(hours=2)
    ctx = context("streetlight", target=Target(80, lit_since))
    assert dark_at_night(ctx, observed(MIDNIGHT_KST, p3416_0_3=0), MIDNIGHT_KST).present is True
    no_power = observed(MIDNIGHT_KST, p3416_0_3=80, p3416_0_46=0.0)
    assert dark_at_night(ctx, no_power, MIDNIGHT_KST).present is True
    # The schedule switched it off for the small hours: dark is right.
    off = context("streetlight", target=Target(0, lit_since))
    assert dark_at_night(off, observed(MIDNIGHT_KST, p3416_0_3=0), MIDNIGHT_KST).present is False
    # Just switched on: the light gets the tolerance to follow, and is not judged meanwhile.
    fresh = context("streetlight", target=Target(80, MIDNIGHT_KST - timedelta(minutes=5)))
    assert dark_at_night(fresh, observed(MIDNIGHT_KST, p3416_0_3=0), MIDNIGHT_KST) is None
    assert dark_at_night(ctx, observed(MIDNIGHT_KST), MIDNIGHT_KST) is None


def test_level_not_following_its_target_for_longer_than_allowed():
    ctx = context("streetlight", target=Target(50, MIDNIGHT_KST - timedelta(minutes=20)))
    found = level_not_following(ctx, observed(MIDNIGHT_KST, p3416_0_3=100), MIDNIGHT_KST)
    assert (found.type, found.present, found.detail) == (AlarmType.LEVEL_NOT_FOLLOWING, True,
                                                         "at 100 % instead of 50 %")
    assert level_not_following(ctx, observed(MIDNIGHT_KST, p3416_0_3=58), MIDNIGHT_KST).present is False
    recent = context("streetlight", target=Target(50, MIDNIGHT_KST - timedelta(minutes=10)))
    assert level_not_following(recent, observed(MIDNIGHT_KST, p3416_0_3=100), MIDNIGHT_KST) is None
    assert level_not_following(context("streetlight"), observed(MIDNIGHT_KST, p3416_0_3=100), MIDNIGHT_KST) is None


def test_power_anomaly_against_nominal_times_level():
    ctx = context("streetlight", nominal_w=100.0)
    found = power_anomaly(ctx, observed(MIDNIGHT_KST, p3416_0_3=50, p3416_0_46=70.0), MIDNIGHT_KST)
    assert (found.type, found.present) == (AlarmType.POWER_ANOMALY, True)
    assert found.detail == "70 W instead of 50 W (+40 %)"
    assert power_anomaly(ctx, observed(MIDNIGHT_KST, p3416_0_3=50, p3416_0_46=55.0), MIDNIGHT_KST).present is False
    # Supply power when the lamp's own is not reported; nominal wattage reported by the controller.
    reported = context("streetlight")
    supply = observed(MIDNIGHT_KST, p3416_0_3=100, p3418_0_4=30.0, p3416_0_36=90)
    assert power_anomaly(reported, supply, MIDNIGHT_KST).present is True


def test_power_anomaly_cannot_judge_without_nominal_level_or_a_current_reading():
    assert power_anomaly(context("streetlight"), observed(MIDNIGHT_KST, p3416_0_3=50, p3416_0_46=5.0),
                         MIDNIGHT_KST) is None
    ctx = context("streetlight", nominal_w=100.0)
    assert power_anomaly(ctx, observed(MIDNIGHT_KST, p3416_0_3=0, p3416_0_46=0.0), MIDNIGHT_KST) is None
    stale = observed(MIDNIGHT_KST, p3416_0_3=100)
    stale.latest[LAMP_POWER] = Value(MIDNIGHT_KST - timedelta(minutes=5), 50.0)
    assert power_anomaly(ctx, stale, MIDNIGHT_KST) is None


def test_energy_meter_going_backwards():
    ctx = context("streetlight")
    back = with_previous(observed(NOON_KST, p3416_0_47=1200.0), LAMP_ENERGY, 1250.0, timedelta(minutes=5))
    found = energy_backwards(ctx, back, NOON_KST)
    assert (found.type, found.present) == (AlarmType.ENERGY_METER_BACKWARDS, True)
    forward = with_previous(observed(NOON_KST, p3416_0_47=1250.5), LAMP_ENERGY, 1250.0, timedelta(minutes=5))
    assert energy_backwards(ctx, forward, NOON_KST).present is False
    # The supply meter counts Wh: 5 Wh back is within 0.01 kWh.
    wh = with_previous(observed(NOON_KST, p3418_0_6=99_995.0), SUPPLY_ENERGY, 100_000.0, timedelta(minutes=5))
    assert energy_backwards(ctx, wh, NOON_KST).present is False
    assert energy_backwards(ctx, observed(NOON_KST, p3416_0_47=1.0), NOON_KST) is None
