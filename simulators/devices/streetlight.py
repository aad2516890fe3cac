"""A streetlight: an outdoor lamp controller (3416) with an electrical monitor (3418).

The controller follows its photocell: on at dusk at the default dimming level, dimmed to 50 %
from midnight to 05:00, off at dawn. A Write of Command (/3416/0/1, 0..100) overrides that
until the next dusk or dawn, or for Manual override default duration (/3416/0/53) seconds of
simulated time when that is set. Power is nominal wattage x level / 100 (+-3 %) while lit,
about 1.5 W of standby otherwise; energy integrates it.

Faults: a failed lamp (no light, Lamp failure set while driven), a welded relay (day burner), a
relay stuck open (dark at night), a dimming driver stuck at one level (ignores its command),
dead LED modules (power far below nominal x level) and energy counters running backwards.
"""

from __future__ import annotations

import time

from fleet.objectmodel import ResourcePath
from simulators.client import REGISTERED
from simulators.clock import HOUR_S
from simulators.devices.base import AC_MAINS, LTE_FDD, PERIPHERAL_MALFUNCTION, SimulatedDevice, positions
from simulators.inventory import DeviceSpec
from simulators.objects import InstanceTable, Resource, attribute, executable

NIGHT_DIM_LEVEL = 50
NIGHT_DIM_HOURS = (0.0, 5.0)  # local time
STANDBY_W = 1.5
POWER_NOISE = 0.03
MAINS_V = 220.0
MAINS_HZ = 60.0
DEFAULT_WATTAGE = 90.0
# level_not_following: a driver stuck at this level whenever the lamp is on; at least 20 from
# every level a schedule or the photocell asks for (100, 80, 60, 50, 40).
STUCK_LEVEL = 20
# power_anomaly: part of the LED modules dead, the light draws this share of what it should.
DEAD_MODULES_POWER = (0.35, 0.6)
# energy_meter_backwards: the counters lose this share at once, then count down.
METER_GLITCH = 0.02


def _switch(argument: tuple[Streetlight, int]) -> None:
    light, generation = argument
    if generation != light.switch_generation or light.link.silent:
        return
    before = light.output_level()
    light.advance()
    if light.output_level() != before or light.last_reported_level != light.output_level():
        light.link.report_soon()
    light.schedule_switch()


class Streetlight(SimulatedDevice):
    kind = "streetlight"
    device_type = "outdoor lamp controller"
    defaults = ("Lumen Korea", "LK-120", "3.2.1")
    bearer = LTE_FDD
    power_sources = {0: AC_MAINS}
    reported = tuple(ResourcePath.parse(p) for p in (
        "/3416/0/2", "/3416/0/3", "/3416/0/5", "/3416/0/10", "/3416/0/15", "/3416/0/18",
        "/3416/0/46", "/3416/0/47", "/3418/0/1", "/3418/0/2", "/3418/0/4", "/3418/0/5",
        "/3418/0/6", "/3418/0/35"))
    # After a dimming write: the new level and the power it draws (command in action, dimming
    # level, light source active power; supply current and active power).
    reported_after_write = positions(reported, ("/3416/0/2", "/3416/0/3", "/3416/0/46", "/3418/0/2", "/3418/0/4"))

    __slots__ = ("nominal_w", "default_level", "command", "override_until", "override_duration_s",
                 "photocell_s", "lamp_failed", "lamp_failure_flag", "stuck_on", "operating_h",
                 "lamp_energy_kwh", "supply_energy_wh", "switches", "lamp_on_at", "lit",
                 "switch_generation", "last_reported_level", "relay_open", "stuck_level", "power_scale",
                 "meter_backwards")

    def __init__(self, spec: DeviceSpec, world, faults) -> None:
        super().__init__(spec, world, faults)
        noise = self.noise
        self.nominal_w = float(spec.attributes.get("nominal_wattage") or DEFAULT_WATTAGE)
        self.default_level = 100
        self.command: int | None = None
        self.override_until = 0.0
        self.override_duration_s = 0
        # Photocells differ: each trips a few minutes either side of sunset and sunrise.
        self.photocell_s = noise.uniform(-300, 300)
        self.lamp_failed = False
        self.lamp_failure_flag = False
        self.stuck_on = False  # the day-burner fault: relay welded, photocell ignored
        self.relay_open = False  # the dark-at-night fault: relay stuck open, no light at all
        self.stuck_level: int | None = None  # the level-not-following fault
        self.power_scale = 1.0  # the power-anomaly fault
        self.meter_backwards = False
        years = noise.uniform(0.2, 6.0)
        self.operating_h = round(years * 4200 * noise.uniform(0.95, 1.05), 2)
        self.lamp_energy_kwh = self.operating_h * self.nominal_w * 0.8 / 1000
        self.supply_energy_wh = self.lamp_energy_kwh * 1000 + years * 8760 * STANDBY_W * 0.6
        self.switches = int(years * 365)
        self.lit = self.output_level() > 0
        clock = world.clock
        self.lamp_on_at = clock.wall_at(self.sim_t - noise.uniform(1, 20) * HOUR_S)
        self.switch_generation = 0
        self.last_reported_level = -1

    @classmethod
    def tables(cls, spec: DeviceSpec) -> dict[tuple[int, int], InstanceTable]:
        return super().tables(spec) | {(3416, 0): _CONTROLLER, (3418, 0): _MONITOR}

    # -- the lamp's behaviour -----------------------------------------------------------------

    def scheduled_level(self, sim_t: float) -> int:
        env = self.world.env
        if not env.is_dark(sim_t, self.photocell_s):
            return 0
        start, end = NIGHT_DIM_HOURS
        hour = env.clock.local_hour(sim_t)
        return min(NIGHT_DIM_LEVEL, self.default_level) if start <= hour < end else self.default_level

    def commanded_level(self, sim_t: float | None = None) -> int:
        sim_t = self.sim_t if sim_t is None else sim_t
        if self.command is not None and sim_t < self.override_until:
            return self.command
        return self.scheduled_level(sim_t)

    def output_level(self, sim_t: float | None = None) -> int:
        """The level the controller drives the lamp at (what it measures as dimming level)."""
        level = self.commanded_level(sim_t)
        if self.stuck_on and level == 0:
            return self.default_level
        if self.relay_open:
            return 0
        if self.stuck_level is not None and level > 0:
            return self.stuck_level
        return level

    def lamp_power(self, level: int) -> float:
        if level == 0 or self.lamp_failed:
            return 0.0
        return self.nominal_w * level / 100 * self.power_scale

    def next_change(self, sim_t: float) -> float:
        """The first simulated time after sim_t at which the scheduled or commanded level may change."""
        env = self.world.env
        candidates = [env.next_daylight_change(sim_t, self.photocell_s)]
        hour = env.clock.local_hour(sim_t)
        for boundary in NIGHT_DIM_HOURS:
            ahead = (boundary - hour) % 24 or 24
            candidates.append(sim_t + ahead * HOUR_S)
        if self.command is not None and self.override_until > sim_t:
            candidates.append(self.override_until)
        return min(candidates)

    def evolve(self, start: float, end: float) -> None:
        t = start
        while t < end:
            boundary = min(self.next_change(t), end)
            level = self.output_level((t + boundary) / 2)
            hours = (boundary - t) / HOUR_S
            power = self.lamp_power(level)
            sign = -1 if self.meter_backwards else 1
            self.lamp_energy_kwh = max(0.0, self.lamp_energy_kwh + sign * power * hours / 1000)
            self.supply_energy_wh = max(0.0, self.supply_energy_wh + sign * (power or STANDBY_W) * hours)
            if power:
                self.operating_h += hours
            if level > 0 and self.lamp_failed:
                self.lamp_failure_flag = True
            lit = level > 0
            if lit != self.lit:
                if lit:
                    self.lamp_on_at = self.world.clock.wall_at(t)
                else:
                    self.switches += 1
                self.lit = lit
            t = boundary
        if self.command is not None and end >= self.override_until:
            self.command = None

    def schedule_switch(self) -> None:
        self.switch_generation += 1
        clock = self.world.clock
        due = clock.monotonic_at(self.next_change(self.sim_t)) + 0.001
        self.world.scheduler.at(max(due, time.monotonic()), _switch, (self, self.switch_generation))

    def on_registered(self) -> None:
        first = not self.reporting
        super().on_registered()
        if first:
            self.schedule_switch()

    def report(self, *, full: bool) -> bytes | None:
        payload = super().report(full=full)
        self.last_reported_level = self.output_level()
        return payload

    # -- what the server can do ---------------------------------------------------------------

    def write_command(self, level: int) -> None:
        self.command = int(level)
        self.override_until = (self.sim_t + self.override_duration_s if self.override_duration_s
                               else self.world.env.next_daylight_change(self.sim_t, self.photocell_s))
        self._reschedule()

    def write_default_level(self, level: int) -> None:
        self.default_level = int(level)
        self._reschedule()

    def _reschedule(self) -> None:
        if self.link is not None and self.link.state == REGISTERED:
            self.schedule_switch()

    def supply_power(self) -> float:
        level = self.output_level()
        power = self.lamp_power(level)
        if power:
            return round(power * (1 + self.noise.uniform(-POWER_NOISE, POWER_NOISE)), 2)
        return round(STANDBY_W * (1 + self.noise.uniform(-0.05, 0.05)), 2)

    def strike(self, fault: str) -> None:
        if fault == "lamp_failure":
            self.advance()
            self.lamp_failed = True
            if self.output_level() > 0:
                self.lamp_failure_flag = True
            self.error_code = PERIPHERAL_MALFUNCTION
            self.link.report_soon()
        elif fault in LIGHT_FAULTS:
            self.advance()
            LIGHT_FAULTS[fault](self)
            self.link.report_soon()
        super().strike(fault)

    def repair(self) -> None:
        self.advance()
        self.lamp_failed = self.lamp_failure_flag = self.stuck_on = self.relay_open = False
        self.meter_backwards = False
        self.stuck_level = None
        self.power_scale = 1.0
        super().repair()


def _weld_relay(light: Streetlight) -> None:
    light.stuck_on = True


def _open_relay(light: Streetlight) -> None:
    light.relay_open = True


def _stick_driver(light: Streetlight) -> None:
    light.stuck_level = STUCK_LEVEL


def _kill_modules(light: Streetlight) -> None:
    light.power_scale = round(light.noise.uniform(*DEAD_MODULES_POWER), 2)


def _reverse_meter(light: Streetlight) -> None:
    light.meter_backwards = True
    light.lamp_energy_kwh *= 1 - METER_GLITCH
    light.supply_energy_wh *= 1 - METER_GLITCH


# What each streetlight fault (other than lamp failure) does to the light when it strikes.
LIGHT_FAULTS = {"day_burner": _weld_relay, "dark_at_night": _open_relay,
                "level_not_following": _stick_driver, "power_anomaly": _kill_modules,
                "energy_meter_backwards": _reverse_meter}


def _light_source_power(light: Streetlight) -> float:
    power = light.lamp_power(light.output_level())
    return round(power * (1 + light.noise.uniform(-POWER_NOISE, POWER_NOISE)), 2) if power else 0.0


def _supply_current(light: Streetlight) -> float:
    power = light.supply_power()
    factor = 0.95 if light.lamp_power(light.output_level()) else 0.5
    return round(power / (MAINS_V * factor), 3)


def _reset(name: str, value: float = 0.0):
    def execute(light: Streetlight, _arguments: bytes) -> None:
        light.advance()
        setattr(light, name, value)
    return executable(execute)


_CONTROLLER: InstanceTable = {
    1: Resource(read=lambda d: d.command if d.command is not None else d.commanded_level(),
                write=Streetlight.write_command),
    2: Resource(read=lambda d: d.commanded_level()),
    3: Resource(read=lambda d: d.output_level()),
    4: Resource(read=lambda d: d.default_level, write=Streetlight.write_default_level),
    5: attribute("lamp_failure_flag"),
    10: Resource(read=lambda d: d.stuck_on and d.commanded_level() == 0),
    15: Resource(read=lambda d: round(d.operating_h, 3)),
    16: _reset("operating_h"),
    17: attribute("lamp_on_at"),
    18: attribute("switches"),
    19: _reset("switches", 0),
    36: Resource(read=lambda d: round(d.nominal_w), write=lambda d, v: setattr(d, "nominal_w", float(v))),
    46: Resource(read=_light_source_power),
    47: Resource(read=lambda d: round(d.lamp_energy_kwh, 4)),
    53: attribute("override_duration_s", writable=True),
    54: Resource(read=lambda d: d.command is not None and d.sim_t < d.override_until),
}

_MONITOR: InstanceTable = {
    1: Resource(read=lambda d: round(MAINS_V * (1 + d.noise.gauss(0, 0.01)), 1)),
    2: Resource(read=_supply_current),
    3: Resource(read=lambda d: round(MAINS_HZ + d.noise.gauss(0, 0.01), 2)),
    4: Resource(read=lambda d: d.supply_power()),
    5: Resource(read=lambda d: 0.95 if d.lamp_power(d.output_level()) else 0.5),
    6: Resource(read=lambda d: round(d.supply_energy_wh, 1)),
    7: _reset("supply_energy_wh"),
    35: Resource(read=lambda d: d.output_level()),
}
