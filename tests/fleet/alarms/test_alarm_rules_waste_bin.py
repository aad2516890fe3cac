"""Overflow, fire and knocked-over bins."""

from __future__ import annotations

from datetime import timedelta

from fleet.alarms.models import AlarmType
from fleet.alarms.rules.waste_bin import TEMPERATURE, fire, knocked_over, overflow
from tests.fleet.alarms.conftest import NOON_KST, context, observed, with_previous


def test_overflow_at_or_above_the_threshold():
    ctx = context("waste_bin")
    assert overflow(ctx, observed(NOON_KST, p3435_0_2=90.0), NOON_KST).present is True
    assert overflow(ctx, observed(NOON_KST, p3435_0_2=89.9), NOON_KST).present is False
    found = overflow(context("waste_bin", settings={"overflow_fill_percent": 80}),
                     observed(NOON_KST, p3435_0_2=85), NOON_KST)
    assert (found.type, found.present, found.detail) == (AlarmType.BIN_OVERFLOW, True, "85 % full")
    assert overflow(ctx, observed(NOON_KST), NOON_KST) is None


def test_fire_above_the_temperature_threshold():
    ctx = context("waste_bin")
    assert fire(ctx, observed(NOON_KST, p3303_0_5700=71.0), NOON_KST).present is True
    assert fire(ctx, observed(NOON_KST, p3303_0_5700=69.0), NOON_KST).present is False


def test_fire_rising_fast_below_the_threshold():
    ctx = context("waste_bin")
    rising = with_previous(observed(NOON_KST, p3303_0_5700=45.0), TEMPERATURE, 25.0, timedelta(minutes=2))
    found = fire(ctx, rising, NOON_KST)
    assert found.present is True and "rising 10.0 °C/min" in found.detail
    slow = with_previous(observed(NOON_KST, p3303_0_5700=45.0), TEMPERATURE, 40.0, timedelta(minutes=2))
    assert fire(ctx, slow, NOON_KST).present is False


def test_a_rise_between_reports_too_close_or_too_far_apart_is_not_judged_as_a_rise():
    ctx = context("waste_bin")
    quick = with_previous(observed(NOON_KST, p3303_0_5700=45.0), TEMPERATURE, 25.0, timedelta(seconds=5))
    assert fire(ctx, quick, NOON_KST).present is False
    stale = with_previous(observed(NOON_KST, p3303_0_5700=45.0), TEMPERATURE, 5.0, timedelta(hours=2))
    assert fire(ctx, stale, NOON_KST).present is False


def test_fire_from_the_bins_own_temperature_alarm_and_no_data():
    ctx = context("waste_bin")
    assert fire(ctx, observed(NOON_KST, p3435_0_22=True), NOON_KST).present is True
    assert fire(ctx, observed(NOON_KST, p3303_0_5700=30.0, p3435_0_22=True), NOON_KST).present is True
    assert fire(ctx, observed(NOON_KST, p3435_0_22=False), NOON_KST) is None
    assert fire(ctx, observed(NOON_KST), NOON_KST) is None


def test_knocked_over_by_tilt_angle_in_degrees():
    ctx = context("waste_bin")
    found = knocked_over(ctx, observed(NOON_KST, p3429_0_1=1.5), NOON_KST)
    assert (found.type, found.present, found.value) == (AlarmType.BIN_KNOCKED_OVER, True, 85.9)
    assert knocked_over(ctx, observed(NOON_KST, p3429_0_1=0.03), NOON_KST).present is False
    assert knocked_over(context("waste_bin", settings={"knocked_over_tilt_degrees": 1}),
                        observed(NOON_KST, p3429_0_1=0.03), NOON_KST).present is True


def test_knocked_over_falls_back_on_out_of_position_and_needs_data():
    ctx = context("waste_bin")
    assert knocked_over(ctx, observed(NOON_KST, p3429_0_6=True), NOON_KST).present is True
    assert knocked_over(ctx, observed(NOON_KST, p3429_0_6=False), NOON_KST).present is False
    assert knocked_over(ctx, observed(NOON_KST), NOON_KST) is None
