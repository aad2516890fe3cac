"""Faults on demand: which devices fail, how, and when.

`--fault KIND=FRACTION` forces a fault on that fraction of the eligible devices (at least one
when the fraction is above zero), striking shortly after each one's first report; for
`malformed` the number is instead the chance that any report goes out corrupted. `--faults`
adds random faults at low rates per simulated day. Fires and knocked-over bins are part of the
world and happen at their own rare rates unless set to 0. A fault lasts until the device is
repaired on site, which the simulated device takes from an Execute of Reset Error Code
(/3/0/12): the crew resets the controller once the work is done.

The firmware faults (`fw_*`) strike only when a firmware update happens on a chosen device,
every time one does: `fw_download_fail` (the link drops after the first block: Update Result
4), `fw_corrupt` (a flipped byte: 5), `fw_install_fail` (8 after Updating, back on the old
version), `fw_rollback` (reboots, reports success yet runs the old version), `fw_brick` (never
comes back after Execute Update) and `fw_slow` (a slow link: one block each 200 ms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simulators.noise import Noise

# Fault -> device kinds it can strike. docs/simulators.md lists what each one makes a device
# report on the standard resources and the alarm it should raise.
ELIGIBLE = {
    "silent": ("streetlight", "waste_bin", "wifi_ap"),
    "lamp_failure": ("streetlight",),
    "day_burner": ("streetlight",),
    "dark_at_night": ("streetlight",),
    "level_not_following": ("streetlight",),
    "power_anomaly": ("streetlight",),
    "energy_meter_backwards": ("streetlight",),
    "overflow": ("waste_bin",),
    "fire": ("waste_bin",),
    "knockover": ("waste_bin",),
    "fill_sensor_stuck": ("waste_bin",),
    # Only bins run on a battery; lights are on mains, access points on PoE (no /3/0/9).
    "low_battery": ("waste_bin",),
    "ap_down": ("wifi_ap",),
    "ap_overloaded": ("wifi_ap",),
    "throughput_collapse": ("wifi_ap",),
    "clock_skew": ("streetlight", "waste_bin", "wifi_ap"),
    "malformed": ("streetlight", "waste_bin", "wifi_ap"),
    # Firmware faults lie in wait: they strike when the device next updates its firmware.
    "fw_download_fail": ("streetlight", "waste_bin", "wifi_ap"),
    "fw_corrupt": ("streetlight", "waste_bin", "wifi_ap"),
    "fw_install_fail": ("streetlight", "waste_bin", "wifi_ap"),
    "fw_rollback": ("streetlight", "waste_bin", "wifi_ap"),
    "fw_brick": ("streetlight", "waste_bin", "wifi_ap"),
    "fw_slow": ("streetlight", "waste_bin", "wifi_ap"),
}
FIRMWARE_FAULTS = tuple(fault for fault in ELIGIBLE if fault.startswith("fw_"))
# Faults of the device's state, each one an alarm condition (they strike at any time).
STATE_FAULTS = tuple(fault for fault in ELIGIBLE if fault != "malformed" and fault not in FIRMWARE_FAULTS)
# With --faults: chance per device per simulated day.
RANDOM_DAILY_RATES = {"silent": 0.002, "lamp_failure": 0.001, "day_burner": 0.0005,
                      "dark_at_night": 0.0005, "level_not_following": 0.0005,
                      "power_anomaly": 0.0005, "energy_meter_backwards": 0.0002,
                      "overflow": 0.002, "fill_sensor_stuck": 0.0005, "low_battery": 0.0005,
                      "ap_down": 0.001, "ap_overloaded": 0.002, "throughput_collapse": 0.0005,
                      "clock_skew": 0.0003}
# World events, always on: a bin fire every twenty years, a knock-over every two, per bin.
WORLD_DAILY_RATES = {"fire": 1 / (20 * 365), "knockover": 1 / (2 * 365)}
RANDOM_MALFORMED_CHANCE = 0.001
# Forced faults strike this long (wall seconds) after the device's first report.
FORCED_DELAY_S = 1.0


@dataclass
class FaultPlan:
    forced: dict[str, float] = field(default_factory=dict)
    random: bool = False

    @classmethod
    def parse(cls, specs: list[str] | None, random: bool = False) -> FaultPlan:
        forced: dict[str, float] = {}
        for spec in specs or []:
            name, sep, value = spec.partition("=")
            name = name.strip().replace("-", "_")
            if name not in ELIGIBLE:
                raise ValueError(f"unknown fault {name!r}: choose from {', '.join(ELIGIBLE)}")
            try:
                fraction = float(value) if sep else 1.0
            except ValueError:
                raise ValueError(f"fault {name}: {value!r} is not a number") from None
            if not 0 <= fraction <= 1:
                raise ValueError(f"fault {name}: the fraction must be between 0 and 1")
            forced[name] = fraction
        return cls(forced, random)

    def malformed_chance(self) -> float:
        if "malformed" in self.forced:
            return self.forced["malformed"]
        return RANDOM_MALFORMED_CHANCE if self.random else 0.0

    def daily_rate(self, fault: str) -> float:
        """Chance per simulated day that fault strikes a device unprompted."""
        if fault in WORLD_DAILY_RATES:
            return 0.0 if self.forced.get(fault) == 0 else WORLD_DAILY_RATES[fault]
        return RANDOM_DAILY_RATES.get(fault, 0.0) if self.random else 0.0

    def forced_on(self, endpoints_by_kind: dict[str, list[str]], seed: int) -> dict[str, set[str]]:
        """Endpoints each forced state or firmware fault strikes, chosen reproducibly from the
        seed."""
        chosen: dict[str, set[str]] = {}
        for fault, fraction in self.forced.items():
            if fault == "malformed" or fraction <= 0:
                continue
            eligible = sorted(e for kind in ELIGIBLE[fault] for e in endpoints_by_kind.get(kind, ()))
            if not eligible:
                continue
            noise = Noise(seed, "fault:" + fault)
            order = sorted(eligible, key=lambda _e: noise.random())
            count = min(len(order), max(1, math.floor(fraction * len(order) + 0.5)))
            chosen[fault] = set(order[:count])
        return chosen


class DeviceFaults:
    """The faults one device carries now, and its chance of corrupting a report."""

    __slots__ = ("malformed", "forced")

    def __init__(self, malformed: float = 0.0, forced: tuple[str, ...] = ()) -> None:
        self.malformed = malformed
        self.forced = forced
