"""A simulation run: find or provision the devices, give each a socket, drive them, report.

Everything a device does is scheduled on one heap swept by one task (see scheduler.py); each
device owns a UDP socket connected to its server (plain, or a DTLS session: links.py), as a
device behind its own SIM or NAT would.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
import sys
import time
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import structlog

from simulators import inventory, links
from simulators.client import REGISTER, LwM2MClient, Network
from simulators.clock import SimClock
from simulators.credentials import CredentialsError, CredentialsFile, DeviceCredential
from simulators.devices import KINDS, SimulatedDevice, World
from simulators.devices.waste_bin import COLLECTION_MODES
from simulators.environment import Environment
from simulators.faults import DeviceFaults, FaultPlan
from simulators.inventory import DeviceSpec
from simulators.noise import Noise
from simulators.rest import ApiError, FleetApi
from simulators.scheduler import Scheduler
from simulators.security import NOSEC, SecurityError, device_credentials
from simulators.stats import Stats
from simulators.truck import Truck

log = structlog.get_logger("simulators")

DEFAULT_REPORT_INTERVAL_S = 900.0  # simulated seconds: a quarter of an hour
DEFAULT_TIMEZONE = "Asia/Seoul"
COAP_PORT = 5683
COAPS_PORT = 5684
SOCKET_BATCH = 500
# File descriptors beyond one per device: the loop, stdio, the HTTP client, the runtime.
SPARE_DESCRIPTORS = 64


class SimulationError(Exception):
    """The run cannot start: a bad option, an unreachable API, too few file descriptors."""


@dataclass
class SimulationConfig:
    counts: dict[str, int]
    server: str = f"coap://127.0.0.1:{COAP_PORT}"
    api: str | None = None
    key: str | None = None
    provision: bool = False
    devices_file: Path | None = None
    seed: int = 1
    speed: float = 1.0
    duration_s: float | None = None
    start: datetime | None = None
    lifetime_s: int = 300
    report_interval_s: float | None = None
    register_rate: float = 200.0
    max_registering: int = 256
    faults: FaultPlan = field(default_factory=FaultPlan)
    progress_s: float = 5.0
    deregister_timeout_s: float = 15.0
    # Firmware blocks (RFC 7959) every device asks for and accepts; None: its model's.
    firmware_block_size: int | None = None
    # Endpoints that register in queue mode (binding UQ), and those that cannot be observed on
    # object 5 (Fleet must read their firmware states).
    queue_mode: frozenset[str] = frozenset()
    unobservable_firmware: frozenset[str] = frozenset()
    # Who empties the bins (simulators.devices.waste_bin): 'round' or 'fleet'.
    collection: str = "round"
    # A crew key: a truck (simulators.truck) drives the crew's routes and empties the bins it reaches.
    truck_key: str | None = None
    # None: each device as its credentials file entry says (NoSec without one); else every
    # device uses this mode: nosec, psk, rpk or bootstrap (simulators.security).
    security: str | None = None
    credentials_file: Path | None = None
    # Fleet's coaps listener, and its bootstrap server; None: --server's host on port 5684.
    secure_server: str | None = None
    bootstrap_server: str | None = None

    def servers(self) -> links.Servers:
        host = urlsplit(self.server).hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        secure = self.secure_server or f"coaps://{host}:{COAPS_PORT}"
        return links.Servers(self.server, secure, self.bootstrap_server or secure)


def server_address(uri: str) -> tuple[int, tuple]:
    """(address family, socket address) of coap://HOST[:PORT]."""
    parts = urlsplit(uri)
    if parts.scheme != "coap" or not parts.hostname:
        raise SimulationError(f"--server must look like coap://HOST:PORT, not {uri!r}")
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(parts.hostname, parts.port or COAP_PORT,
                                                       type=socket.SOCK_DGRAM)[0]
    except (socket.gaierror, ValueError) as exc:
        raise SimulationError(f"cannot resolve {parts.hostname}: {exc}") from None
    return family, sockaddr


async def load_devices(config: SimulationConfig) -> tuple[list[DeviceSpec], str]:
    """The devices to simulate and the city's timezone, from the API or a file."""
    if config.devices_file is not None:
        specs = inventory.from_file(config.devices_file)
        return _take(specs, config.counts), DEFAULT_TIMEZONE
    if not config.api or not config.key:
        raise SimulationError("give --api and a key (FLEET_SIMULATE_KEY or --key-file; to list or"
                              " provision the city's devices) or --devices-file")
    async with FleetApi(config.api, config.key) as api:
        city = await api.city()
        specs: list[DeviceSpec] = []
        for kind, count in config.counts.items():
            if count <= 0:
                continue
            existing = [d for d in await api.devices(kind) if d.get("status") != "decommissioned"]
            if config.provision:
                by_endpoint = {d["endpoint"]: d for d in existing}
                wanted = [inventory.endpoint_name(city["slug"], kind, n) for n in range(1, count + 1)]
                missing = [n for n, e in enumerate(wanted, start=1) if e not in by_endpoint]
                planned = {s.endpoint: s for s in inventory.plan(city["slug"], kind, missing, config.seed)}
                if planned:
                    created = await api.import_devices(list(planned.values()))
                    log.info("devices provisioned", kind=kind, created=created)
                specs += [planned[e] if e in planned else inventory.from_api(by_endpoint[e])
                          for e in wanted]
            else:
                chosen = [inventory.from_api(d) for d in existing[:count]]
                if len(chosen) < count:
                    log.warning("fewer devices in the city than asked for", kind=kind,
                                asked=count, found=len(chosen))
                specs += chosen
        if any(s.kind == "waste_bin" for s in specs):
            try:
                fills = await api.bin_fills()
            except ApiError as exc:  # a fresh start then, as with no readings at all
                log.warning("bins' last fills not read", reason=str(exc))
                fills = {}
            specs = [dataclasses.replace(s, fill_percent=fills.get(s.endpoint)) if s.kind == "waste_bin" else s
                     for s in specs]
    return specs, city.get("timezone") or DEFAULT_TIMEZONE


def _take(specs: list[DeviceSpec], counts: dict[str, int]) -> list[DeviceSpec]:
    taken: list[DeviceSpec] = []
    for kind, count in counts.items():
        taken += [s for s in specs if s.kind == kind][:max(count, 0)]
    return taken


def ensure_descriptors(needed: int, wanted: int | None = None) -> None:
    """At least `needed` descriptors, and up to `wanted` where the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SimulationError(f"{needed} file descriptors are needed (one socket per device);"
                                  f" the hard limit is {hard}: raise it with ulimit -Hn")
    wanted = max(needed, wanted or needed)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))


def _begin(client: LwM2MClient) -> None:
    """Start one device's first registration, within the window of registrations in flight."""
    network = client.network
    if network.stopping:
        return
    if network.registering >= network.max_registering:
        network.scheduler.after(0.05, _begin, client)
        return
    client.want(REGISTER)


class Simulation:
    def __init__(self, config: SimulationConfig, *, out: TextIO | None = sys.stdout) -> None:
        self.config = config
        self.out = out
        self.stats = Stats()
        self.scheduler = Scheduler()
        self.devices: list[SimulatedDevice] = []
        self.clients: list[LwM2MClient] = []
        self.world: World | None = None
        self._stop = asyncio.Event()
        self._abandon_deregistration = False
        self.ready = asyncio.Event()

    def stop(self) -> None:
        """Stop and de-register; asked again (a second Ctrl-C), stop waiting for the server."""
        if self._stop.is_set():
            self._abandon_deregistration = True
        self._stop.set()

    def device(self, endpoint: str) -> SimulatedDevice:
        """A running device by endpoint (for tests and tooling)."""
        for device in self.devices:
            if device.endpoint == endpoint:
                return device
        raise LookupError(f"no simulated device {endpoint!r}")

    def empty_bin(self, endpoint: str) -> bool:
        """A truck reached this bin: it is emptied now (False: no such simulated bin)."""
        try:
            device = self.device(endpoint)
        except LookupError:
            return False
        if device.kind != "waste_bin" or device.link is None or device.link.silent:
            return False
        device.collect()
        return True

    async def run(self, *, handle_signals: bool = False) -> Stats:
        config = self.config
        if config.truck_key and not config.api:
            raise SimulationError("a truck (FLEET_SIMULATE_TRUCK_KEY or --truck-key-file) follows its routes"
                                  " over --api")
        if config.collection not in COLLECTION_MODES:
            raise SimulationError(f"--collection is one of {', '.join(COLLECTION_MODES)}")
        server_address(config.server)
        servers = config.servers()
        for uri in (servers.secure, servers.bootstrap):
            try:
                links.resolve(uri)
            except links.LinkError as exc:
                raise SimulationError(str(exc)) from None
        specs, timezone = await load_devices(config)
        if not specs:
            raise SimulationError("no devices to simulate")
        try:
            credentials, credentials_file = await device_credentials(
                specs, config.security, config.credentials_file, config.api, config.key)
        except (CredentialsError, SecurityError) as exc:
            raise SimulationError(str(exc)) from None
        # A firmware download from another host than the server takes a second socket.
        ensure_descriptors(len(specs) + SPARE_DESCRIPTORS, 2 * len(specs) + SPARE_DESCRIPTORS)
        self._build(specs, timezone, servers, credentials, credentials_file)
        await self._open_sockets()
        loop = asyncio.get_running_loop()
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, self.stop)
        self.stats.restart()
        self._start_registrations()
        tasks = [asyncio.create_task(self.scheduler.run(), name="simulator-scheduler")]
        if self.out is not None and config.progress_s > 0:
            tasks.append(asyncio.create_task(self._progress(), name="simulator-progress"))
        truck_api = None
        if config.truck_key:
            truck_api = FleetApi(config.api, config.truck_key)
            truck = Truck(truck_api, self.empty_bin, speed=config.speed)
            tasks.append(asyncio.create_task(truck.run(), name="simulator-truck"))
        self.ready.set()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(config.duration_s):
                    await self._stop.wait()
            await self._shutdown()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for client in self.clients:
                client.close_link()
            if truck_api is not None:
                await truck_api.__aexit__(None, None, None)
            if handle_signals:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(signum)
        self.stats.errors += self.scheduler.errors
        if self.out is not None:
            print(self._status(), file=self.out)
            print(self.stats.summary(), file=self.out, flush=True)
        return self.stats

    def _build(self, specs: list[DeviceSpec], timezone: str, servers: links.Servers,
               credentials: dict[str, DeviceCredential] | None = None,
               credentials_file: CredentialsFile | None = None) -> None:
        config = self.config
        start = None
        if config.start is not None:
            # A start without a zone is the city's local time.
            moment = config.start if config.start.tzinfo else config.start.replace(tzinfo=ZoneInfo(timezone))
            start = moment.timestamp()
        clock = SimClock(config.speed, start, timezone)
        interval = config.report_interval_s or DEFAULT_REPORT_INTERVAL_S
        self.world = world = World(Environment(clock), self.scheduler, self.stats, config.faults,
                                   config.seed, {kind: interval for kind in KINDS},
                                   config.firmware_block_size, config.collection)
        network = Network(self.scheduler, self.stats, config.lifetime_s,
                          max_registering=config.max_registering)
        server_key = credentials_file.server_key_der() if credentials_file else b""
        credentials = credentials or {}
        endpoints_by_kind: dict[str, list[str]] = {}
        for spec in specs:
            endpoints_by_kind.setdefault(spec.kind, []).append(spec.endpoint)
        forced = config.faults.forced_on(endpoints_by_kind, config.seed)
        malformed = config.faults.malformed_chance()
        for spec in specs:
            faults = DeviceFaults(malformed, tuple(f for f, chosen in forced.items()
                                                   if spec.endpoint in chosen))
            device = KINDS[spec.kind](spec, world, faults)
            accounts = links.factory_accounts(credentials.get(spec.endpoint, NOSEC), servers, server_key,
                                              config.lifetime_s)
            client = LwM2MClient(device, network, accounts)
            client.queue_mode = spec.endpoint in config.queue_mode
            client.observes_firmware = spec.endpoint not in config.unobservable_firmware
            device.link = client
            self.devices.append(device)
            self.clients.append(client)
        self.stats.devices = len(self.devices)

    async def _open_sockets(self) -> None:
        """Each plain device's socket to its server. A DTLS link opens when its device first
        wants to register (its handshake starts at once), so the registration rate paces the
        handshakes too, instead of every device's ClientHello leaving together."""
        plain = [c for c in self.clients if not links.secure(c.target().server_uri)]
        for start in range(0, len(plain), SOCKET_BATCH):
            await asyncio.gather(*(c.connect(c.target()) for c in plain[start:start + SOCKET_BATCH]))

    def _start_registrations(self) -> None:
        noise = Noise(self.config.seed, "registration order")
        order = sorted(self.clients, key=lambda _c: noise.random())
        now = time.monotonic()
        spacing = 1.0 / self.config.register_rate if self.config.register_rate > 0 else 0.0
        for index, client in enumerate(order):
            client.device.start()
            self.scheduler.at(now + index * spacing, _begin, client)

    async def _shutdown(self) -> None:
        """De-register every registered device, a window at a time so the server is not
        flooded; whatever is left at the deadline simply lets its lifetime run out."""
        network = self.clients[0].network
        network.stopping = True
        waiting = list(reversed(self.clients))
        deadline = time.monotonic() + self.config.deregister_timeout_s
        while time.monotonic() < deadline and not self._abandon_deregistration:
            while waiting and network.deregistering < network.max_registering:
                waiting.pop().stop()
            if not waiting and all(c.done for c in self.clients):
                return
            await asyncio.sleep(0.02)

    def _status(self) -> str:
        clock = self.world.clock
        local = clock.local_datetime(clock.now())
        return self.stats.status_line(f"sim {local:%Y-%m-%d %H:%M} {local.tzname()} x{clock.speed:g}")

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(self.config.progress_s)
            print(self._status(), file=self.out, flush=True)


async def simulate(config: SimulationConfig, *, out: TextIO | None = sys.stdout,
                   handle_signals: bool = False) -> Stats:
    return await Simulation(config, out=out).run(handle_signals=handle_signals)
