"""What every simulated device has: identity (/3), server account (/1), connectivity (/4),
a physical state advanced lazily in simulated time, periodic reports and faults."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from fleet.objectmodel import Reading, ResourcePath
from protocols.lwm2m import senml
from simulators import serving
from simulators.client import SEND, UPDATE
from simulators.clock import DAY_S, SimClock
from simulators.environment import Environment
from simulators import firmware_transfer
from simulators.faults import (ELIGIBLE, FIRMWARE_FAULTS, FORCED_DELAY_S, STATE_FAULTS, DeviceFaults,
                               FaultPlan)
from simulators.firmware import FirmwareUpdate
from simulators.geography import activity
from simulators.inventory import FIRMWARE, DeviceSpec, FirmwareProfile
from simulators.noise import Noise
from simulators.objects import InstanceTable, ObjectTree, Resource, attribute, constant, executable
from simulators.scheduler import Scheduler
from simulators.stats import Stats

if TYPE_CHECKING:
    from simulators.client import LwM2MClient

# Which network a kind of device reaches Fleet over (LwM2M /4/0/0 bearer codes).
LTE_FDD, NB_IOT, ETHERNET = 6, 7, 41
AC_MAINS, INTERNAL_BATTERY, POWER_OVER_ETHERNET = 6, 1, 4
# /3/0/11 error codes.
NO_ERROR, LOW_BATTERY_POWER, PERIPHERAL_MALFUNCTION = 0, 1, 8
# The clock_skew fault: a device's clock off by this many hours, either way.
CLOCK_SKEW_HOURS = (2.0, 48.0)
CURRENT_TIME = ResourcePath(3, 0, 13)
FIRMWARE_OBJECT = 5


@dataclass
class World:
    """What all simulated devices of a run share."""

    env: Environment
    scheduler: Scheduler
    stats: Stats
    faults: FaultPlan
    seed: int
    # Simulated seconds between two periodic reports, per kind.
    report_interval_s: dict[str, float]
    # The firmware block size of every device, instead of its model's (inventory.FIRMWARE).
    firmware_block_size: int | None = None
    # Who empties the bins: 'round' (district crews at night) or 'fleet' (only Fleet's plans).
    collection: str = "round"

    @property
    def clock(self) -> SimClock:
        return self.env.clock


def _report_tick(device: SimulatedDevice) -> None:
    link = device.link
    if link.silent or link.network.stopping:
        return
    link.want(SEND)
    serving.notify_observers(link)
    device.schedule_report()


def _strike(argument: tuple[SimulatedDevice, str]) -> None:
    device, fault = argument
    if device.link.silent or device.link.network.stopping:
        return
    device.strike(fault)


def positions(reported: tuple[ResourcePath, ...], paths: tuple[str, ...]) -> tuple[int, ...]:
    """Where `paths` stand in a kind's `reported` tuple."""
    return tuple(reported.index(ResourcePath.parse(path)) for path in paths)


class SimulatedDevice:
    kind: ClassVar[str]
    device_type: ClassVar[str]
    defaults: ClassVar[tuple[str, str, str]]  # manufacturer, model, firmware version
    bearer: ClassVar[int]
    power_sources: ClassVar[dict[int, int]]  # resource instance -> power source code
    # The resources a Send reports (those that changed since the last one).
    reported: ClassVar[tuple[ResourcePath, ...]]
    # What a device reports at once after the server wrote to it (positions in `reported`);
    # the rest waits for the next regular Send. Empty: everything that changed.
    reported_after_write: ClassVar[tuple[int, ...]] = ()
    # One tree per kind and variant, shared by every device of it.
    _trees: ClassVar[dict[tuple, ObjectTree]] = {}

    __slots__ = ("spec", "world", "noise", "faults", "link", "tree", "sim_t", "last_sent",
                 "reporting", "next_report", "activity", "signal_dbm", "error_code",
                 "first_report_due", "only", "clock_skew", "always", "fw")

    def __init__(self, spec: DeviceSpec, world: World, faults: DeviceFaults) -> None:
        self.spec = spec
        self.world = world
        self.noise = Noise(world.seed, spec.endpoint)
        self.faults = faults
        self.link: LwM2MClient | None = None
        self.tree = self.tree_for(spec)
        self.sim_t = world.clock.now()
        self.last_sent: list | None = None
        self.reporting = False
        self.next_report = 0.0
        self.activity = activity(spec.district)
        self.signal_dbm = round(self.noise.uniform(-110, -70))
        self.error_code = 0
        self.first_report_due = any(f not in FIRMWARE_FAULTS for f in faults.forced)
        self.only: tuple[int, ...] = ()  # the next Send reports only these positions of `reported`
        self.clock_skew = timedelta(0)  # how far the device's own clock is off
        # Paths every Send carries even unchanged (a faulty device repeating itself).
        self.always: tuple[ResourcePath, ...] = ()
        self.fw: FirmwareUpdate | None = None  # object 5, once the server first touches it

    @property
    def endpoint(self) -> str:
        return self.spec.endpoint

    # -- the object tree ----------------------------------------------------------------------

    @classmethod
    def variant(cls, spec: DeviceSpec) -> tuple:
        """What distinguishes one tree layout of this kind from another."""
        return ()

    @classmethod
    def tree_for(cls, spec: DeviceSpec) -> ObjectTree:
        key = (cls.__name__, *cls.variant(spec))
        tree = SimulatedDevice._trees.get(key)
        if tree is None:
            tree = SimulatedDevice._trees[key] = ObjectTree(cls.tables(spec))
        return tree

    @classmethod
    def tables(cls, spec: DeviceSpec) -> dict[tuple[int, int], InstanceTable]:
        return {(1, 0): _SERVER, (3, 0): cls.device_table(), (4, 0): cls.connectivity_table(),
                (5, 0): firmware_transfer.TABLE}

    @classmethod
    def device_table(cls) -> InstanceTable:
        return {
            0: Resource(read=lambda d: d.spec.manufacturer or d.defaults[0]),
            1: Resource(read=lambda d: d.spec.model or d.defaults[1]),
            2: Resource(read=lambda d: d.spec.serial or d.endpoint),
            3: Resource(read=lambda d: d.firmware_version()),
            4: executable(lambda d, _args: d.reboot()),
            6: constant(dict(cls.power_sources)),
            10: Resource(read=lambda d: 150 + zlib.crc32(d.endpoint.encode()) % 60),
            11: Resource(read=lambda d: {0: d.error_code}),
            12: executable(lambda d, _args: d.repair()),
            13: Resource(read=SimulatedDevice.current_time, write=SimulatedDevice.set_time),
            14: constant("+09:00"),
            15: Resource(read=lambda d: d.world.clock.zone.key),
            16: constant("U"),
            17: constant(cls.device_type),
            18: constant("1.0"),
            19: Resource(read=lambda d: d.spec.firmware_version or d.defaults[2]),
            21: constant(512),
        }

    @classmethod
    def connectivity_table(cls) -> InstanceTable:
        table = {
            0: constant(cls.bearer),
            1: constant({0: cls.bearer}),
            4: Resource(read=lambda d: {0: d.local_address()}),
        }
        if cls.bearer != ETHERNET:
            table |= {2: attribute("signal_dbm"),
                      3: Resource(read=lambda d: max(-20, min(-3, (d.signal_dbm + 60) // 4))),
                      8: Resource(read=lambda d: zlib.crc32(d.endpoint.encode()) & 0xFFFFF)}
        return table

    # -- firmware (object 5, simulators.firmware_transfer) -------------------------------------

    def firmware_version(self) -> str:
        """What it runs: the last update it installed, else what the registry says or the
        kind's default."""
        if self.fw is not None and self.fw.running is not None:
            return self.fw.running
        return self.spec.firmware_version or self.defaults[2]

    def firmware_profile(self) -> FirmwareProfile:
        return FIRMWARE[self.kind]

    def firmware_block_size(self) -> int:
        return self.world.firmware_block_size or FIRMWARE[self.kind].block_size

    def local_address(self) -> str:
        transport = self.link.transport if self.link else None
        sockname = transport.get_extra_info("sockname") if transport else None
        return sockname[0] if sockname else "0.0.0.0"

    # -- simulated time -----------------------------------------------------------------------

    def advance(self) -> None:
        """Bring the physical state up to the simulated now."""
        now = self.world.clock.now()
        if now > self.sim_t:
            self.evolve(self.sim_t, now)
            self.sim_t = now

    def evolve(self, start: float, end: float) -> None:
        """Integrate the physics over [start, end) of simulated time."""

    # -- reporting ----------------------------------------------------------------------------

    def report(self, *, full: bool) -> bytes | None:
        """The SenML CBOR pack of a Send: every reported value if full, else those that changed."""
        self.advance()
        tree, paths = self.tree, self.reported
        previous = None if full else self.last_sent
        only, self.only = self.only, ()
        if previous is not None and only:
            # Just what the write changed; the other values keep waiting as unsent.
            readings = []
            for index in only:
                value = tree.value(self, paths[index])
                if value != previous[index]:
                    readings.append(Reading(paths[index], None, value))
                    previous[index] = value
        else:
            values = [tree.value(self, path) for path in paths]
            if previous is None:
                readings = [Reading(path, None, value) for path, value in zip(paths, values, strict=True)]
            else:
                readings = [Reading(path, None, value)
                            for path, value, before in zip(paths, values, previous, strict=True)
                            if value != before]
            self.last_sent = values
        if self.always:
            included = {reading.path for reading in readings}
            readings.extend(Reading(path, None, tree.value(self, path))
                            for path in self.always if path not in included)
        if self.first_report_due:
            self.first_report_due = False
            for fault in self.faults.forced:
                if fault in FIRMWARE_FAULTS:
                    continue  # these wait for a firmware update
                self.world.scheduler.after(FORCED_DELAY_S, _strike, (self, fault))
        if not readings:
            return None
        return senml.encode_cbor(readings)

    def on_registered(self) -> None:
        self.link.want(SEND)
        if not self.reporting:
            self.reporting = True
            interval = self.report_interval_wall()
            self.next_report = time.monotonic() + interval * self.noise.uniform(0.3, 1.0)
            self.world.scheduler.at(self.next_report, _report_tick, self)

    def report_interval_wall(self) -> float:
        return self.world.report_interval_s[self.kind] / self.world.clock.speed

    def schedule_report(self) -> None:
        self.next_report += self.report_interval_wall()
        now = time.monotonic()
        if self.next_report < now:  # fell behind (a long pause): skip, do not burst
            self.next_report = now + self.report_interval_wall()
        self.world.scheduler.at(self.next_report, _report_tick, self)

    def on_written(self, paths: list[ResourcePath]) -> None:
        if all(path.object == FIRMWARE_OBJECT for path in paths):
            return  # object 5 tells its observers itself; nothing a Send carries changed
        self.only = self.reported_after_write
        self.link.report_soon()

    # -- events and faults --------------------------------------------------------------------

    def start(self) -> None:
        """Schedule the random faults and world events this device is subject to."""
        for fault in STATE_FAULTS:
            if self.kind in ELIGIBLE[fault]:
                self.schedule_random(fault)

    def schedule_random(self, fault: str) -> None:
        rate = self.world.faults.daily_rate(fault)
        if rate <= 0:
            return
        sim_at = self.world.clock.now() + self.noise.expovariate(rate) * DAY_S
        due = self.world.clock.monotonic_at(sim_at)
        # Beyond a year of wall time nothing in a run will notice; keep the heap small.
        if due - time.monotonic() < 365 * DAY_S:
            self.world.scheduler.at(due, _strike, (self, fault))

    def strike(self, fault: str) -> None:
        self.world.stats.fault(fault)
        if fault == "silent":
            self.world.stats.silenced += 1
            self.link.go_silent()
        elif fault == "clock_skew":
            hours = self.noise.uniform(*CLOCK_SKEW_HOURS) * self.noise.choice((-1, 1))
            self.clock_skew = timedelta(hours=hours)
            # Its clock goes in every Send from now on, so the server sees it without a Read.
            self.report_always(CURRENT_TIME)
            self.link.report_soon()

    def report_always(self, path: ResourcePath) -> None:
        if path not in self.always:
            self.always = (*self.always, path)

    def repair(self) -> None:
        """The crew's work on site is done: Execute Reset Error Code (/3/0/12) after it. Every
        fault but silence (a silent device hears nothing) is gone from the next report on."""
        self.advance()
        self.error_code = NO_ERROR
        self.clock_skew = timedelta(0)
        self.always = ()
        self.link.report_soon()

    # -- the device's own clock (/3/0/13) -----------------------------------------------------

    def current_time(self) -> datetime:
        return self.world.clock.wall_at(self.world.clock.now()) + self.clock_skew

    def set_time(self, value: object) -> None:
        """A server may set the clock (LwM2M /3/0/13 is writable): it is right from then on."""
        if isinstance(value, datetime):
            self.clock_skew = value - self.world.clock.wall_at(self.world.clock.now())
            self.always = tuple(p for p in self.always if p != CURRENT_TIME)

    def reboot(self) -> None:
        firmware_transfer.interrupted(self)
        self.world.scheduler.after(0.2, lambda link: link.reboot(), self.link)


def _lifetime_write(device: SimulatedDevice, value: object) -> None:
    device.link.lifetime_s = int(value)
    device.link.lifetime_changed = True
    device.link.want(UPDATE)


_SERVER: InstanceTable = {
    0: constant(1),
    1: Resource(read=lambda d: d.link.lifetime_s, write=_lifetime_write),
    2: constant(0),
    3: constant(0),
    6: constant(False),
    7: constant("U"),
    8: executable(lambda d, _args: d.link.want(UPDATE)),
}
