"""Low battery and clock skew, for every kind of device."""

from __future__ import annotations

from datetime import timedelta

from fleet.alarms.models import AlarmType
from fleet.alarms.rules.device import clock_skew, low_battery
from tests.fleet.alarms.conftest import NOON_KST, context, observed


def test_low_battery_below_the_threshold_is_present():
    ctx = context("waste_bin")
    found = low_battery(ctx, observed(NOON_KST, p3_0_9=19), NOON_KST)
    assert (found.type, found.present, found.value) == (AlarmType.LOW_BATTERY, True, 19.0)
    assert (found.tenant_id, found.device_id) == (ctx.tenant_id, ctx.device_id)


def test_low_battery_at_the_threshold_is_absent_and_the_city_threshold_counts():
    assert low_battery(context("waste_bin"), observed(NOON_KST, p3_0_9=20), NOON_KST).present is False
    ctx = context("waste_bin", settings={"low_battery_percent": 30})
    assert low_battery(ctx, observed(NOON_KST, p3_0_9=25), NOON_KST).present is True


def test_no_battery_reported_gives_no_finding():
    assert low_battery(context("streetlight"), observed(NOON_KST), NOON_KST) is None
    assert low_battery(context("streetlight"), observed(NOON_KST, p3_0_9="full"), NOON_KST) is None


def test_clock_skew_beyond_the_tolerance_either_way():
    ctx = context("wifi_ap")
    ahead = (NOON_KST + timedelta(minutes=11)).timestamp()
    behind = (NOON_KST - timedelta(hours=3)).timestamp()
    found = clock_skew(ctx, observed(NOON_KST, p3_0_13=ahead), NOON_KST)
    assert found.present is True and found.value == 11.0 and "ahead" in found.detail
    assert clock_skew(ctx, observed(NOON_KST, p3_0_13=behind), NOON_KST).detail == "clock 180 min behind"


def test_clock_skew_within_the_tolerance_is_absent():
    near = (NOON_KST + timedelta(minutes=9)).timestamp()
    assert clock_skew(context("wifi_ap"), observed(NOON_KST, p3_0_13=near), NOON_KST).present is False
    assert clock_skew(context("wifi_ap"), observed(NOON_KST), NOON_KST) is None
