"""Streetlight conditions: a failed lamp, lit by day, dark at night, not following its target,
drawing the wrong power, an energy meter running backwards."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.rules.models import DeviceContext, Observed, Rule, finding
from fleet.lighting.astro import night_sun, rounded
from fleet.lighting.night import night_of

DIMMING_LEVEL = "/3416/0/3"        # Outdoor lamp controller: Dimming level (measured), %
LAMP_FAILURE = "/3416/0/5"         # Outdoor lamp controller: Lamp failure
NOMINAL_WATTAGE = "/3416/0/36"     # Outdoor lamp controller: Nominal lamp wattage, W
LAMP_POWER = "/3416/0/46"          # Outdoor lamp controller: Light source active power, W
LAMP_ENERGY = "/3416/0/47"         # Outdoor lamp controller: Light source active energy, kWh
SUPPLY_POWER = "/3418/0/4"         # Electrical monitor: Active power, W
SUPPLY_ENERGY = "/3418/0/6"        # Electrical monitor: Cumulated active energy, Wh
METER_LEVEL = "/3418/0/35"         # Electrical monitor: Dimming level, %

# Below this a lamp gives no light: a controller's standby draw is 1-2 W.
DARK_W = 3.0
# A power reading older than the level by more than this was taken at another level.
POWER_LEVEL_SKEW = dt.timedelta(seconds=60)
ONE_DAY = dt.timedelta(days=1)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def daylight_minutes(ctx: DeviceContext, at: dt.datetime) -> float:
    """How deep into daylight `at` is at the light's place: minutes after sunrise or before
    sunset (positive), or minutes after sunset or before sunrise (negative) at night."""
    # The sun is looked up per rounded place (astro's cache cell), so every light of a cell
    # judged at one moment (one evaluator batch) shares one answer: two rules ask per light.
    return _daylight_minutes(rounded((ctx.lat, ctx.lon)), ctx.timezone, at)


@lru_cache(maxsize=4096)
def _daylight_minutes(place: tuple[float, float], timezone: str, at: dt.datetime) -> float:
    zone = _zone(timezone)
    night = night_of(at, zone)
    sun = night_sun(place, timezone, night)
    # The night is bounded by solar noons, which stray from the local noons night_of uses.
    if at < sun.solar_noon:
        night -= ONE_DAY
    elif at >= sun.solar_noon + ONE_DAY:
        night += ONE_DAY
    if night != night_of(at, zone):
        sun = night_sun(place, timezone, night)
    if sun.midnight_sun:
        return float("inf")
    # Polar night: civil twilight stands in for a sunset, else the whole span is dark.
    sunset = sun.sunset or sun.civil_dusk or sun.solar_noon
    sunrise = sun.sunrise or sun.civil_dawn or sun.solar_noon + ONE_DAY
    if at < sunset:
        return (sunset - at).total_seconds() / 60
    if at >= sunrise:
        return (at - sunrise).total_seconds() / 60
    return -min(at - sunset, sunrise - at).total_seconds() / 60


def _level(seen: Observed) -> float | None:
    level = seen.number(DIMMING_LEVEL)
    return level if level is not None else seen.number(METER_LEVEL)


def _lamp_power(seen: Observed) -> tuple[float, dt.datetime] | None:
    for path in (LAMP_POWER, SUPPLY_POWER):
        power = seen.number(path)
        if power is not None:
            return power, seen.latest[path].time
    return None


def _lit(seen: Observed) -> bool | None:
    level = _level(seen)
    if level is not None:
        return level > 0
    power = _lamp_power(seen)
    return None if power is None else power[0] > DARK_W


def lamp_failure(ctx: DeviceContext, seen: Observed, now: dt.datetime) -> Finding | None:
    failed = seen.get(LAMP_FAILURE)
    if not isinstance(failed, bool):
        return None
    return finding(ctx, AlarmType.LAMP_FAILURE, failed, now, failed, "lamp failure reported" if failed else "")


def day_burner(ctx: DeviceContext, seen: Observed, now: dt.datetime) -> Finding | None:
    """Lit in daylight, further from sunset and sunrise than the tolerance. A light the
    schedule itself commands on (an event, a test) is not a day burner: that is the condition
    found absent, so an alarm raised before the command was seen clears. Within the tolerance
    nothing is judged, so an open alarm is neither repeated nor cleared there."""
    lit = _lit(seen)
    if lit is None:
        return None
    if ctx.target is not None and ctx.target.dimming_level > 0:
        return finding(ctx, AlarmType.DAY_BURNER, False, now, _level(seen), "")
    daylight = daylight_minutes(ctx, now)
    if 0 < daylight <= ctx.settings.day_burner_tolerance_minutes:
        return None
    present = lit and daylight > 0
    return finding(ctx, AlarmType.DAY_BURNER, present, now, _level(seen),
                   "lit in daylight" if present else "")


def dark_at_night(ctx: DeviceContext, seen: Observed, now: dt.datetime) -> Finding | None:
    """Dark (level 0, or no lamp power) while it should be lit for longer than the tolerance:
    the schedule's target when one governs the light, else the hours between sunset and
    sunrise. Within the tolerance nothing is judged: a light dark for hours whose target was
    just set again must not look repaired."""
    level, power = _level(seen), _lamp_power(seen)
    if level is None and power is None:
        return None
    tolerance = ctx.settings.dark_at_night_tolerance_minutes
    if ctx.target is not None:
        if ctx.target.dimming_level <= 0:
            should_be_lit = False
        elif (now - ctx.target.since).total_seconds() / 60 <= tolerance:
            return None
        else:
            should_be_lit = True
    else:
        daylight = daylight_minutes(ctx, now)
        if -tolerance <= daylight < 0:
            return None
        should_be_lit = daylight < 0
    dark = (level is not None and level <= 0) or (power is not None and power[0] < DARK_W)
    present = should_be_lit and dark
    return finding(ctx, AlarmType.DARK_AT_NIGHT, present, now, level, "dark at night" if present else "")


def level_not_following(ctx: DeviceContext, seen: Observed, now: dt.datetime) -> Finding | None:
    level = _level(seen)
    if level is None or ctx.target is None:
        return None
    settings, target = ctx.settings, ctx.target
    if (now - target.since).total_seconds() / 60 <= settings.level_not_following_minutes:
        # Still within the time a light gets to follow; the last judgement stands.
        return None
    off_by = abs(level - target.dimming_level)
    present = off_by > settings.level_tolerance_percent
    return finding(ctx, AlarmType.LEVEL_NOT_FOLLOWING, present, now, level,
                   f"at {level:g} % instead of {target.dimming_level} %" if present else "")


def power_anomaly(ctx: DeviceContext, seen: Observed, now: dt.datetime) -> Finding | None:
    """Active power against nominal wattage x level, while lit."""
    level, power = _level(seen), _lamp_power(seen)
    nominal = ctx.nominal_w or seen.number(NOMINAL_WATTAGE)
    if level is None or power is None or not nominal or level <= 0:
        return None
    level_time = (seen.latest.get(DIMMING_LEVEL) or seen.latest[METER_LEVEL]).time
    if level_time - power[1] > POWER_LEVEL_SKEW:
        return None  # the level changed since the power was measured
    expected = nominal * level / 100
    deviation = (power[0] - expected) / expected * 100
    present = abs(deviation) > ctx.settings.power_tolerance_percent
    return finding(ctx, AlarmType.POWER_ANOMALY, present, now, power[0],
                   f"{power[0]:g} W instead of {expected:g} W ({deviation:+.0f} %)" if present else "")


def energy_backwards(ctx: DeviceContext, seen: Observed, now: dt.datetime) -> Finding | None:
    """A cumulative meter reading below the one before it (an energy reset through the
    server's own Execute shows here too: it is rare, and worth a look)."""
    tolerance_kwh = ctx.settings.energy_backwards_tolerance_kwh
    judged = None
    for path, kwh_per_unit in ((LAMP_ENERGY, 1.0), (SUPPLY_ENERGY, 0.001)):
        latest, previous = seen.latest.get(path), seen.previous.get(path)
        if latest is None or previous is None or latest.time <= previous.time:
            continue
        if not all(isinstance(v, int | float) for v in (latest.value, previous.value)):
            continue
        drop_kwh = (previous.value - latest.value) * kwh_per_unit
        if drop_kwh > tolerance_kwh:
            return finding(ctx, AlarmType.ENERGY_METER_BACKWARDS, True, now, latest.value,
                           f"{path} fell from {previous.value:g} to {latest.value:g}")
        judged = latest.value
    if judged is None:
        return None
    return finding(ctx, AlarmType.ENERGY_METER_BACKWARDS, False, now, judged)


LEVEL_PATHS = frozenset({DIMMING_LEVEL, METER_LEVEL})
POWER_PATHS = frozenset({LAMP_POWER, SUPPLY_POWER})
ENERGY_PATHS = frozenset({LAMP_ENERGY, SUPPLY_ENERGY})

RULES = (
    Rule(AlarmType.LAMP_FAILURE, frozenset({LAMP_FAILURE}), lamp_failure),
    Rule(AlarmType.DAY_BURNER, LEVEL_PATHS | POWER_PATHS, day_burner),
    Rule(AlarmType.DARK_AT_NIGHT, LEVEL_PATHS | POWER_PATHS, dark_at_night),
    Rule(AlarmType.LEVEL_NOT_FOLLOWING, LEVEL_PATHS, level_not_following),
    Rule(AlarmType.POWER_ANOMALY, LEVEL_PATHS | POWER_PATHS | {NOMINAL_WATTAGE}, power_anomaly),
    Rule(AlarmType.ENERGY_METER_BACKWARDS, ENERGY_PATHS, energy_backwards),
)
