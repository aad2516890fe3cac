"""A waste bin: filling level (3435), temperature (3303) and tilt (3429), on a battery.

How waste arrives (kind, district, weekday and hour, the bin's own rate) and what its fill
sensor reads (noise, rare spikes) is simulators.fill's model, shared with offline benchmarks.
Who empties it is the run's collection mode (`fleet simulate --collection`): 'round' (the
default), each district's crew starts its round at a fixed night hour and empties the bins it
passes that are worth emptying; 'fleet', only Fleet does: a server records a collection with
Execute on /3435/0/9 ("Average filling speed reset"), or a simulated truck following Fleet's
route reaches the bin (simulators.truck). The bin takes it as "emptied now", drops to a small
residue and counts it in /3435/0/19 (Filling operations counter, reset by Execute /3435/0/20).
Fires and knock-overs are rare world events. A stuck fill sensor keeps reporting the reading it
froze at while the waste goes on arriving.
"""

from __future__ import annotations

import math
import time

from fleet.objectmodel import ResourcePath
from simulators.clock import DAY_S, HOUR_S
from simulators.devices.base import INTERNAL_BATTERY, LOW_BATTERY_POWER, NB_IOT, SimulatedDevice
from simulators.fill import (DEPOSITS, LITRES_PER_DAY, WORTH_EMPTYING, WORTH_EMPTYING_OTHERWISE, FillModel,
                             sensor_reading)
from simulators.inventory import DeviceSpec
from simulators.noise import Noise
from simulators.objects import InstanceTable, Resource, attribute, constant, executable

HEIGHT_CM = {120: 93, 240: 107, 660: 125, 1100: 137}
HIGH_THRESHOLD, LOW_THRESHOLD = 80.0, 10.0
# Who empties the bins: the district crews' fixed night round, or only Fleet (its plans' trucks
# and the "emptied" Execute).
COLLECTION_MODES = ("round", "fleet")
# The same emptying told twice (the truck at the bin, then Fleet's Execute for its stop) comes
# within this many wall seconds, whatever the simulation's speed.
SAME_EMPTYING_WALL_S = 60.0
OVERFULL_LIMIT = 150.0
FIRE_ALARM_C = 60.0
UPRIGHT_RAD, OUT_OF_POSITION_RAD = 0.03, 0.5
BATTERY_DRAIN_PER_DAY = 1 / 30
LOW_BATTERY = (3.0, 12.0)  # the low_battery fault: a cell failing early, percent left
FILL = ResourcePath(3435, 0, 2)
# The fill model's constants stay importable from here too (bench/forecast reads them).
__all__ = ["COLLECTION_MODES", "DEPOSITS", "LITRES_PER_DAY", "WORTH_EMPTYING", "WORTH_EMPTYING_OTHERWISE",
           "WasteBin"]


def _collection(bin_: WasteBin) -> None:
    if bin_.link.silent or bin_.link.network.stopping:
        return
    bin_.advance()
    if bin_.fill_percentage() >= bin_.worth_emptying and not bin_.overflowing:
        bin_.empty()
        bin_.link.report_soon()
    if bin_.tilt_rad > OUT_OF_POSITION_RAD:  # the crew sets it upright
        bin_.tilt_rad = UPRIGHT_RAD
        bin_.link.report_soon()
    bin_.schedule_collection(bin_.sim_t + HOUR_S)


def _event_report(bin_: WasteBin) -> None:
    if not bin_.link.silent:
        bin_.advance()
        bin_.link.report_soon()


class WasteBin(SimulatedDevice):
    kind = "waste_bin"
    device_type = "waste bin fill sensor"
    defaults = ("CleanCity", "CC-S240", "1.8.0")
    bearer = NB_IOT
    power_sources = {0: INTERNAL_BATTERY}
    reported = tuple(ResourcePath.parse(p) for p in (
        "/3435/0/2", "/3435/0/3", "/3435/0/5", "/3435/0/7", "/3435/0/8", "/3435/0/13",
        "/3435/0/19", "/3435/0/22", "/3303/0/5700", "/3429/0/1", "/3429/0/6", "/3/0/9"))

    __slots__ = ("model", "capacity_l", "waste_kind", "worth_emptying", "fill_l", "reading", "sensor",
                 "collected_at", "emptied_wall", "fill_after_collection", "collections", "round_offset_h",
                 "overflowing", "fire_started", "fire_peak_c", "fire_length_s", "tilt_rad",
                 "tilt_min", "tilt_max", "temp_min", "temp_max", "battery", "high_threshold",
                 "low_threshold", "height_cm", "stuck_fill")

    def __init__(self, spec: DeviceSpec, world, faults) -> None:
        super().__init__(spec, world, faults)
        noise = self.noise
        self.model = model = FillModel.of(spec, world.seed)
        self.capacity_l = model.capacity_l
        self.height_cm = HEIGHT_CM.get(int(self.capacity_l), round(80 + self.capacity_l ** 0.5 * 2))
        self.waste_kind = model.waste_kind
        self.worth_emptying = model.worth_emptying
        start = noise.uniform(0.0, 0.6)  # drawn either way, so the bin's later draws stay the same
        self.fill_l = self.capacity_l * (start if spec.fill_percent is None else min(spec.fill_percent, 100.0) / 100)
        self.sensor = Noise(world.seed, f"sensor:{spec.endpoint}")
        self.reading: float | None = None  # the sensor's last measurement; None: measure anew
        self.collected_at = self.sim_t - noise.uniform(0.2, 1.0) * DAY_S
        self.emptied_wall = -math.inf  # time.monotonic() of the last emptying this run
        self.fill_after_collection = 0.0
        self.collections = noise.randrange(400)
        self.round_offset_h = model.round_hour
        self.overflowing = False
        self.fire_started: float | None = None
        self.fire_peak_c = 0.0
        self.fire_length_s = 0.0
        self.tilt_rad = abs(noise.gauss(UPRIGHT_RAD, 0.01))
        self.tilt_min = self.tilt_max = self.tilt_rad
        self.temp_min = self.temp_max = self.temperature()
        self.battery = noise.uniform(55, 100)
        self.high_threshold, self.low_threshold = HIGH_THRESHOLD, LOW_THRESHOLD
        self.stuck_fill: float | None = None  # the fill-sensor-stuck fault: the frozen reading

    @classmethod
    def tables(cls, spec: DeviceSpec) -> dict[tuple[int, int], InstanceTable]:
        return super().tables(spec) | {(3435, 0): _FILLING, (3303, 0): _TEMPERATURE,
                                       (3429, 0): _TILT}

    @classmethod
    def device_table(cls) -> InstanceTable:
        return super().device_table() | {
            9: Resource(read=lambda d: int(d.battery)),
            20: Resource(read=lambda d: 4 if d.battery < 15 else 0),
        }

    # -- physics ------------------------------------------------------------------------------

    def evolve(self, start: float, end: float) -> None:
        clock = self.world.clock
        litres = self.model.arrivals(clock.local_hours(start), clock.local_hours(end), self.noise)
        self.reading = None
        limit = self.capacity_l * (OVERFULL_LIMIT if self.overflowing else 100.0) / 100
        self.fill_l = min(limit, self.fill_l + litres)
        self.battery = max(0.0, self.battery - BATTERY_DRAIN_PER_DAY * (end - start) / DAY_S)
        if self.fire_started is not None and end > self.fire_started + self.fire_length_s * 2:
            self.fire_started = None
            self.fill_l *= 0.5  # what burnt is gone
        temperature = self.temperature(end)
        self.temp_min, self.temp_max = min(self.temp_min, temperature), max(self.temp_max, temperature)

    def fill_percentage(self) -> float:
        return round(self.fill_l / self.capacity_l * 100, 1)

    def reported_fill(self) -> float:
        """What the fill sensor measures: the real fill give or take its noise (once per moment:
        every resource of a report agrees), unless it is stuck."""
        if self.stuck_fill is not None:
            return self.stuck_fill
        if self.reading is None:
            self.reading = sensor_reading(self.fill_percentage(), self.sensor)
        return self.reading

    def filling_speed(self) -> float:
        """Average filling speed since the last collection, in percent per hour."""
        hours = (self.sim_t - self.collected_at) / HOUR_S
        if hours <= 0:
            return 0.0
        return round(max(0.0, self.fill_percentage() - self.fill_after_collection) / hours, 3)

    def forecast_full(self):
        speed, fill = self.filling_speed(), self.fill_percentage()
        clock = self.world.clock
        if fill >= self.high_threshold or speed <= 0:
            return clock.wall_at(self.sim_t)
        return clock.wall_at(self.sim_t + (self.high_threshold - fill) / speed * HOUR_S)

    def temperature(self, sim_t: float | None = None) -> float:
        sim_t = self.sim_t if sim_t is None else sim_t
        env = self.world.env
        hour = env.clock.local_hour(sim_t)
        sun = max(0.0, math.sin(math.pi * (hour - 7) / 12)) * 2.5  # a dark lid in the sun
        temperature = env.ambient_temperature(sim_t) + sun
        if self.fire_started is not None and sim_t >= self.fire_started:
            burning = sim_t - self.fire_started
            rise = min(1.0, burning / 600)
            decay = max(0.0, (burning - self.fire_length_s) / self.fire_length_s)
            temperature += self.fire_peak_c * rise * math.exp(-3 * decay)
        return round(temperature, 2)

    def empty(self) -> None:
        self.fill_l = self.model.residue(self.noise)
        self.reading = None
        self.fill_after_collection = self.fill_percentage()
        self.collected_at = self.sim_t
        self.emptied_wall = time.monotonic()
        self.collections += 1
        self.overflowing = False

    # -- scheduling ---------------------------------------------------------------------------

    def on_registered(self) -> None:
        first = not self.reporting
        super().on_registered()
        if first and self.world.collection == "round":
            self.schedule_collection(self.sim_t)

    def schedule_collection(self, after: float) -> None:
        """The crew passes once a day at this bin's place in its district's round."""
        clock = self.world.clock
        hours = clock.local_hours(after)
        day_start = hours - hours % 24
        passing = day_start + self.round_offset_h
        while passing <= hours:
            passing += 24
        sim_at = after + (passing - hours) * HOUR_S
        self.world.scheduler.at(clock.monotonic_at(sim_at), _collection, self)

    def collect(self, _arguments: bytes = b"") -> None:
        """Emptied now (the Execute, or a truck at the bin), unless it just was."""
        self.advance()
        if time.monotonic() - self.emptied_wall < SAME_EMPTYING_WALL_S \
                and self.fill_percentage() < self.worth_emptying:
            self.link.report_soon()
            return
        self.empty()
        self.link.report_soon()

    def strike(self, fault: str) -> None:
        self.advance()
        if fault == "overflow":
            self.overflowing = True
            self.fill_l = self.capacity_l * self.noise.uniform(1.02, 1.3)
            self.reading = None
            self.link.report_soon()
        elif fault == "fire" and self.fire_started is None:
            self.fire_started = self.sim_t
            self.fire_peak_c = self.noise.uniform(150, 400)
            self.fire_length_s = self.noise.uniform(20, 60) * 60
            self.link.report_soon()
            clock = self.world.clock
            for later in (600, self.fire_length_s, 2 * self.fire_length_s + 1):
                self.world.scheduler.at(clock.monotonic_at(self.sim_t + later), _event_report, self)
        elif fault == "knockover":
            self.tilt_rad = self.noise.uniform(1.35, 1.6)
            self.tilt_max = max(self.tilt_max, self.tilt_rad)
            self.link.report_soon()
        elif fault == "fill_sensor_stuck" and self.stuck_fill is None:
            self.stuck_fill = self.fill_percentage()
            # The frozen reading goes in every Send, so the server sees it constant, not absent.
            self.report_always(FILL)
        elif fault == "low_battery":
            self.battery = self.noise.uniform(*LOW_BATTERY)
            self.error_code = LOW_BATTERY_POWER
            self.link.report_soon()
        super().strike(fault)
        if fault in ("fire", "knockover"):
            self.schedule_random(fault)

    def repair(self) -> None:
        self.advance()
        if self.overflowing:
            self.empty()
        self.tilt_rad = UPRIGHT_RAD
        self.stuck_fill = None
        self.reading = None
        if self.battery < LOW_BATTERY[1]:
            self.battery = 100.0
        super().repair()


def _reset_min_max_temperature(bin_: WasteBin, _arguments: bytes) -> None:
    bin_.temp_min = bin_.temp_max = bin_.temperature()


def _reset_min_max_tilt(bin_: WasteBin, _arguments: bytes) -> None:
    bin_.tilt_min = bin_.tilt_max = bin_.tilt_rad


_FILLING: InstanceTable = {
    1: attribute("height_cm", writable=True),
    2: Resource(read=WasteBin.reported_fill),
    3: Resource(read=lambda d: round(d.reported_fill() * d.height_cm / 100)),
    4: attribute("high_threshold", writable=True),
    5: Resource(read=lambda d: d.reported_fill() >= d.high_threshold),
    6: attribute("low_threshold", writable=True),
    7: Resource(read=lambda d: d.reported_fill() <= d.low_threshold),
    8: Resource(read=WasteBin.filling_speed),
    9: executable(WasteBin.collect),
    10: Resource(read=WasteBin.forecast_full),
    12: constant(False),
    13: Resource(read=lambda d: d.tilt_rad > OUT_OF_POSITION_RAD),
    16: Resource(read=lambda d: round(d.capacity_l / 1000, 3)),
    18: attribute("waste_kind", writable=True),
    19: attribute("collections"),
    20: executable(lambda d, _args: setattr(d, "collections", 0)),
    22: Resource(read=lambda d: d.temperature() > FIRE_ALARM_C),
}

_TEMPERATURE: InstanceTable = {
    5601: attribute("temp_min"),
    5602: attribute("temp_max"),
    5603: constant(-40.0),
    5604: constant(125.0),
    5605: executable(_reset_min_max_temperature),
    5700: Resource(read=WasteBin.temperature),
    5701: constant("Cel"),
}

_TILT: InstanceTable = {
    1: Resource(read=lambda d: round(d.tilt_rad, 3)),
    2: Resource(read=lambda d: round(d.tilt_min, 3)),
    3: Resource(read=lambda d: round(d.tilt_max, 3)),
    4: executable(_reset_min_max_tilt),
    5: constant(OUT_OF_POSITION_RAD),
    6: Resource(read=lambda d: d.tilt_rad > OUT_OF_POSITION_RAD),
}
