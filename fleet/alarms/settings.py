"""Thresholds and tolerances of every alarm rule, with the defaults a city starts from.

A city stores only what differs from these defaults; a group's row overrides the city's for
its devices. The README lists every field (keep the two in step).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

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
