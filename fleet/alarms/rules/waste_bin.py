"""Waste bin conditions: overflowing, on fire, knocked over."""

from __future__ import annotations

import math
from datetime import datetime

from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.rules.models import DeviceContext, Observed, Rule, finding

FILL_PERCENTAGE = "/3435/0/2"     # Filling level: Actual filling percentage
TEMPERATURE_ALARM = "/3435/0/22"  # Filling level: Temperature alarm (the bin's own judgement)
TEMPERATURE = "/3303/0/5700"      # Temperature: Sensor Value, °C
TILT_ANGLE = "/3429/0/1"          # Tilt sensor: Angle, rad
OUT_OF_POSITION = "/3429/0/6"     # Tilt sensor: Out of position

# A rise is measured over at least this long: a sensor's noise between two quick reports is
# not a fire. Longer than this apart, the two readings say nothing about a rise either.
RISE_MIN_S, RISE_MAX_S = 30.0, 1800.0


def overflow(ctx: DeviceContext, seen: Observed, now: datetime) -> Finding | None:
    fill = seen.number(FILL_PERCENTAGE)
    if fill is None:
        return None
    present = fill >= ctx.settings.overflow_fill_percent
    return finding(ctx, AlarmType.BIN_OVERFLOW, present, now, fill,
                   f"{fill:g} % full" if present else "")


def fire(ctx: DeviceContext, seen: Observed, now: datetime) -> Finding | None:
    """Too hot, heating up fast, or the bin's own temperature alarm."""
    temperature = seen.number(TEMPERATURE)
    flagged = seen.get(TEMPERATURE_ALARM) is True
    if temperature is None:
        return finding(ctx, AlarmType.BIN_FIRE, True, now, None, "temperature alarm") if flagged else None
    settings = ctx.settings
    detail = ""
    if temperature > settings.fire_temperature_c:
        detail = f"{temperature:g} °C"
    else:
        rise = rise_per_minute(seen, TEMPERATURE)
        if rise is not None and rise > settings.fire_rise_c_per_minute:
            detail = f"{temperature:g} °C, rising {rise:.1f} °C/min"
        elif flagged:
            detail = f"{temperature:g} °C, temperature alarm"
    return finding(ctx, AlarmType.BIN_FIRE, bool(detail), now, temperature, detail)


def rise_per_minute(seen: Observed, path: str) -> float | None:
    latest, previous = seen.latest.get(path), seen.previous.get(path)
    if latest is None or previous is None:
        return None
    seconds = (latest.time - previous.time).total_seconds()
    if not RISE_MIN_S <= seconds <= RISE_MAX_S:
        return None
    if not all(isinstance(v, int | float) for v in (latest.value, previous.value)):
        return None
    return (latest.value - previous.value) / seconds * 60


def knocked_over(ctx: DeviceContext, seen: Observed, now: datetime) -> Finding | None:
    angle = seen.number(TILT_ANGLE)
    if angle is None:
        flagged = seen.get(OUT_OF_POSITION)
        if not isinstance(flagged, bool):
            return None
        return finding(ctx, AlarmType.BIN_KNOCKED_OVER, flagged, now, None,
                       "out of position" if flagged else "")
    degrees = math.degrees(abs(angle))
    present = degrees > ctx.settings.knocked_over_tilt_degrees
    return finding(ctx, AlarmType.BIN_KNOCKED_OVER, present, now, round(degrees, 1),
                   f"tilted {degrees:.0f}°" if present else "")


RULES = (
    Rule(AlarmType.BIN_OVERFLOW, frozenset({FILL_PERCENTAGE}), overflow),
    Rule(AlarmType.BIN_FIRE, frozenset({TEMPERATURE, TEMPERATURE_ALARM}), fire),
    Rule(AlarmType.BIN_KNOCKED_OVER, frozenset({TILT_ANGLE, OUT_OF_POSITION}), knocked_over),
)
