"""Conditions every kind of device can show: a low battery, a clock far off the server's."""

from __future__ import annotations

from datetime import datetime

from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.rules.models import DeviceContext, Observed, Rule, finding

BATTERY_LEVEL = "/3/0/9"   # Device: Battery Level, %
CURRENT_TIME = "/3/0/13"   # Device: Current Time, stored as UNIX seconds


def low_battery(ctx: DeviceContext, seen: Observed, now: datetime) -> Finding | None:
    level = seen.number(BATTERY_LEVEL)
    if level is None:
        return None  # mains-powered devices do not report one
    present = level < ctx.settings.low_battery_percent
    return finding(ctx, AlarmType.LOW_BATTERY, present, now, level,
                   f"battery at {level:g} %" if present else "")


def clock_skew(ctx: DeviceContext, seen: Observed, now: datetime) -> Finding | None:
    """The device's clock against ours when we evaluate (within a second of arrival): the
    time of the point itself may come from the same wrong clock."""
    device_time = seen.number(CURRENT_TIME)
    if device_time is None:
        return None
    skew_min = (device_time - now.timestamp()) / 60
    present = abs(skew_min) > ctx.settings.clock_skew_minutes
    return finding(ctx, AlarmType.CLOCK_SKEW, present, now, round(skew_min, 1),
                   f"clock {abs(skew_min):.0f} min {'ahead' if skew_min > 0 else 'behind'}" if present else "")


RULES = (
    Rule(AlarmType.LOW_BATTERY, frozenset({BATTERY_LEVEL}), low_battery),
    Rule(AlarmType.CLOCK_SKEW, frozenset({CURRENT_TIME}), clock_skew),
)
