"""Thresholds and tolerances of every alarm rule, with the defaults a city starts from.

A city stores only what differs from these defaults; a group's row overrides the city's for
its devices. docs/alarms.md lists every field (keep the two in step).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from fleet.alarms.models import AlarmType, Severity
from fleet.errors import FieldError, ValidationFailed

Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
Minutes = Annotated[float, msgspec.Meta(ge=0, le=60 * 24 * 30)]
Positive = Annotated[float, msgspec.Meta(ge=0)]


class AlarmSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # streetlights
    day_burner_tolerance_minutes: Minutes = 30        # lit this long past sunrise / before sunset
    dark_at_night_tolerance_minutes: Minutes = 15     # dark this long while the schedule says lit
    level_tolerance_percent: Percent = 10             # |reported - target dimming level|
    level_not_following_minutes: Minutes = 15
    power_tolerance_percent: Percent = 25             # active power vs nominal x level
    energy_backwards_tolerance_kwh: Positive = 0.01
    # waste bins
    overflow_fill_percent: Percent = 90
    fire_temperature_c: Annotated[float, msgspec.Meta(ge=-50, le=500)] = 70
    fire_rise_c_per_minute: Positive = 5
    knocked_over_tilt_degrees: Annotated[float, msgspec.Meta(ge=0, le=180)] = 45
    fill_stuck_days: Annotated[float, msgspec.Meta(ge=0.5, le=60)] = 3
    # access points
    overloaded_clients: Annotated[int, msgspec.Meta(ge=1)] = 100
    overloaded_link_percent: Percent = 90             # backhaul use (/4/0/6): object 12 counts no clients
    throughput_collapse_percent: Percent = 20         # below this share of its recent median
    # every device
    offline_grace_minutes: Minutes = 5                # beyond registration lifetime
    low_battery_percent: Percent = 20
    clock_skew_minutes: Minutes = 10
    # lifecycle: absent this long before an alarm clears (a flapping signal keeps one alarm)
    clear_after_minutes: Minutes = 10
    # per alarm type, e.g. {"day_burner": "major"}
    severities: dict[str, str] = {}


DEFAULTS = AlarmSettings()
FIELDS = frozenset(AlarmSettings.__struct_fields__)
_TYPES = frozenset(t.value for t in AlarmType)
_SEVERITIES = tuple(s.value for s in Severity)


def merged(*layers: dict) -> AlarmSettings:
    """Defaults, then each layer of stored overrides in order (city, then group)."""
    values = msgspec.structs.asdict(DEFAULTS)
    for layer in layers:
        for key, value in layer.items():
            if key == "severities":
                values["severities"] = {**values["severities"], **value}
            else:
                values[key] = value
    return msgspec.convert(values, AlarmSettings)


def validate_overrides(raw: object) -> dict[str, Any]:
    """Stored overrides from a request body: only known fields, each within its bounds, and
    severities only of known alarm types and severities. Raises ValidationFailed naming each."""
    if not isinstance(raw, dict):
        raise ValidationFailed("alarm settings must be a JSON object", [FieldError("body", "must be an object")])
    errors = [FieldError(name, "is not an alarm setting") for name in raw if name not in FIELDS]
    severities = raw.get("severities", {})
    if not isinstance(severities, dict):
        errors.append(FieldError("severities", "must be an object of alarm type to severity"))
    else:
        errors += [FieldError(f"severities.{name}", "is not an alarm type")
                   for name in severities if name not in _TYPES]
        errors += [FieldError(f"severities.{name}", "must be one of: " + ", ".join(_SEVERITIES))
                   for name, value in severities.items() if name in _TYPES and value not in _SEVERITIES]
    if errors:
        raise ValidationFailed("invalid alarm settings", errors)
    try:
        checked = merged(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = message.rsplit("at `$.", 1)[1].rstrip("`") if "at `$." in message else "body"
        raise ValidationFailed("invalid alarm settings", [FieldError(field, message.split(" - at ")[0])]) from None
    return {name: msgspec.to_builtins(getattr(checked, name)) if name != "severities" else dict(severities)
            for name in raw}
