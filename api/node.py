"""A node's supervisor (`fleet serve`, `fleet demo`): binds the sockets, runs the worker processes on them, restarts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from api.runtime import migrate_database, resolve_dsn
from fleet.db.embedded import EmbeddedWatchdog
from fleet.errors import SettingsError
from fleet.logging import set_worker
from fleet.settings import Settings
from fleet.supervision import Health, Supervisor
from protocols.coap.steering import steer_by_source_port
from protocols.coap.transport import bound_udp_socket
from protocols.lwm2m.listener import ListenerSockets, node_name

log = structlog.get_logger(__name__)

# What a worker reads (api.worker); FLEET_COAP_WORKERS also tells each coap worker its share of
# node-wide budgets.
COAP_WORKERS_ENV = "FLEET_COAP_WORKERS"
HTTP_WORKERS_ENV = "FLEET_HTTP_WORKERS"
WORKER_ENV = "FLEET_WORKER"
NODE_ENV = "FLEET_NODE"
FDS_ENV = "FLEET_WORKER_FDS"
METRICS_SOCKET_ENV = "FLEET_WORKER_METRICS_SOCKET"
SCHEDULER_ENV = "FLEET_WORKER_SCHEDULER"  # "1": the node's scheduler runs in this worker
SUPERVISOR_PID_ENV = "FLEET_SUPERVISOR_PID"  # a worker whose parent is another has lost it

# A worker that died is started again after FIRST_BACKOFF_S, doubling up to MAX_BACKOFF_S while
# it keeps dying; one that ran STEADY_S was fine, and its next death starts the count again.
# The cap stays well under the default node timeout (30 s): a slot whose worker keeps crashing
# is back before other nodes adopt its devices, which would then be watched from two places.
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 8.0
STEADY_S = 60.0
# How long the workers get to drain on stopping (each takes at most DRAIN_GRACE_S or GRACE_S,
# plus its pools and the scheduler's handover) before they are killed.
STOP_S = 20.0
# Connections waiting to be accepted while every HTTP worker is busy or (re)starting.
HTTP_BACKLOG = 2048


CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """The CPUs a cgroup quota grants (`docker run --cpus`, a Kubernetes CPU limit), None without
    one: such a quota leaves every core of the host in the affinity mask, each for a fraction of
    the time. cgroup v2's cpu.max, else v1's cpu.cfs_quota_us."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()  # "max 100000" or "150000 100000"
    except (OSError, ValueError):
        try:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text()
        except OSError:
            return None
    try:
        granted = int(quota) / int(period)
    except (ValueError, ZeroDivisionError):  # "max" (v2) or a broken file
        return None
    return granted if granted > 0 else None  # -1 (v1): no quota


# How much lower the device edge's CPU priority is than the API's (nice increment,
# FLEET_COAP_WORKER_NICE, 0-19). When a storm keeps every core busy, the kernel then runs a
# runnable HTTP worker first and the control room stays fast; outside a storm nothing waits.
# Measured with bench.storm on 2 cores (2 coap + 1 http workers, 10,000 lights): REST p99
# during the storm 133 ms at 0.
COAP_NICE = 5


def coap_nice(environ: Mapping[str, str] = os.environ) -> int:
    """The nice increment of a coap worker: FLEET_COAP_WORKER_NICE, else COAP_NICE."""
    text = environ.get("FLEET_COAP_WORKER_NICE", "").strip()
    try:
        value = int(text) if text else COAP_NICE
    except ValueError:
        raise SettingsError("FLEET_COAP_WORKER_NICE", "a nice increment, 0 to 19", text) from None
    if not 0 <= value <= 19:
        raise SettingsError("FLEET_COAP_WORKER_NICE", "a nice increment, 0 to 19", text)
    return value


def default_workers(cgroup: Path = CGROUP) -> tuple[int, int]:
    """(coap, http) workers of a node: as many device-edge workers as cores (the device traffic
    is the node's bulk), half as many for HTTP."""
    # The cores this process may run on (a container's cpuset), not the machine's, and no more
    # than a CPU quota grants (rounded up).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores, max(1, cores // 2)


def worker_counts(coap: int | None, http: int | None, environ: Mapping[str, str] = os.environ,
                  defaults: tuple[int, int] | None = None) -> tuple[int, int]:
    """The flags, else FLEET_COAP_WORKERS / FLEET_HTTP_WORKERS, else `defaults` (default_workers)."""
    fallback = defaults or default_workers()
    counts = []
    for given, variable, default in ((coap, COAP_WORKERS_ENV, fallback[0]), (http, HTTP_WORKERS_ENV, fallback[1])):
        if given is None:
            text = environ.get(variable, "").strip()
            try:
                given = int(text) if text else default
            except ValueError:
                raise SettingsError(variable, "a number of worker processes, 0 or more", text) from None
            if given < 0:
                raise SettingsError(variable, "a number of worker processes, 0 or more", text)
        counts.append(given)
    if counts == [0, 0]:
        raise SettingsError(f"--coap-workers and --http-workers ({COAP_WORKERS_ENV}, {HTTP_WORKERS_ENV})",
                            "at least one worker between them", "0 and 0")
    return counts[0], counts[1]


def bound_http_socket(host: str, port: int) -> socket.socket:
    """The listening socket every HTTP worker accepts on (as uvicorn binds its own)."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(HTTP_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _coap_address(host: str, port: int) -> tuple:
    return socket.getaddrinfo(host, port, family=socket.AF_INET6, type=socket.SOCK_DGRAM,
                              flags=socket.AI_V4MAPPED | socket.AI_PASSIVE)[0][4]


def _udp_slots(host: str, port: int, count: int) -> list[socket.socket]:
    """One socket per worker slot on the same port, a peer's datagrams reaching slot `source
    port % count` (protocols.coap.steering: a worker can tell which devices it hears, and so
    which of a stopped node's it may take over); port 0 takes a free one for the first and the
    same for the rest."""
    if port:
        _alone_on(host, port)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(bound_udp_socket(_coap_address(host, port)))
            port = sockets[0].getsockname()[1]
        if count > 1:
            steer_by_source_port(sockets[0], count)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _alone_on(host: str, port: int) -> None:
    """Refuse a UDP port some other socket holds. Its owner (another node on this host, a
    `fleet coap`) may be in a reuseport group our slots would join, as any process of the same
    user may: the group's program would count their sockets as slots and ours would replace
    theirs, steering every device of both to the wrong process. A bind without SO_REUSEPORT
    fails on any port already bound, which is what tells."""
    probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        probe.bind(_coap_address(host, port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise OSError(errno.EADDRINUSE, f"udp/{port} is in use by another process (two nodes on one host "
                                        "need ports of their own)") from None
    finally:
        probe.close()


@dataclass
class NodeSockets:
    """What the supervisor binds and keeps open for its whole life: a worker that dies and is
    started again gets the same socket, so nothing queued in it is lost, and the kernel's
    spread of devices over a port's sockets does not change (a socket leaving a reuseport
    group moves the last one into its place: every device of that one would move)."""

    http: socket.socket | None
    coap: list[ListenerSockets] = field(default_factory=list)

    @classmethod
    def bind(cls, settings: Settings, coap_workers: int, http_workers: int) -> NodeSockets:
        bound = cls(None)
        try:
            if http_workers:
                bound.http = bound_http_socket(settings.http.host, settings.http.port)
            if coap_workers:
                coap = _udp_slots(settings.coap.host, settings.coap.port, coap_workers)
                coaps = [None] * coap_workers
                if coaps_on(settings):
                    coaps = _udp_slots(settings.coap.host, settings.coap.coaps_port, coap_workers)
                bound.coap = [ListenerSockets(plain, secure) for plain, secure in zip(coap, coaps, strict=True)]
        except BaseException:
            bound.close()
            raise
        return bound

    def ports(self, settings: Settings) -> Settings:
        """`settings` with the ports bound (a port 0 asked for any)."""
        http, coap = settings.http, settings.coap
        if self.http is not None:
            http = replace(http, port=self.http.getsockname()[1])
        if self.coap:
            coap = replace(coap, port=self.coap[0].coap.getsockname()[1])
            if self.coap[0].coaps is not None:
                coap = replace(coap, coaps_port=self.coap[0].coaps.getsockname()[1])
        return replace(settings, http=http, coap=coap)

    def close(self) -> None:
        for sock in [self.http, *(s for slot in self.coap for s in (slot.coap, slot.coaps))]:
            if sock is not None:
                sock.close()


def coaps_on(settings: Settings) -> bool:
    """The listener opens coaps only with the device keys' key (protocols.lwm2m.listener)."""
    return bool(settings.coap.coaps_port) and settings.security.credentials_key is not None


def worker_settings_environment(settings: Settings) -> dict[str, str]:
    """The settings a command line (or the demo) may have changed, for the workers, which read
    theirs from the environment (fleet.settings). No metrics port: the supervisor serves the
    node's, the workers theirs on Unix sockets."""
    env = {"FLEET_HTTP_HOST": settings.http.host, "FLEET_HTTP_PORT": str(settings.http.port),
           "FLEET_COAP_HOST": settings.coap.host, "FLEET_COAP_PORT": str(settings.coap.port),
           "FLEET_COAPS_PORT": str(settings.coap.coaps_port),
           "FLEET_COAPS_SOURCE_SHARE": str(settings.coap.coaps_source_share),
           "FLEET_METRICS_PORT": "0"}
    if settings.security.credentials_key is not None:
        # The environment, not the arguments: only its owner reads it.
        env["FLEET_CREDENTIALS_KEY"] = settings.security.credentials_key.hex()
    return env


@dataclass
class Worker:
    """One slot of the node: its name, the sockets it inherits and how to start it."""

    name: str
    fds: dict[str, int | None]
    environment: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0

    def command(self) -> list[str]:
        """Its command line: the name is there for `ps` alone (the worker reads FLEET_WORKER)."""
        return [sys.executable, "-m", "api.worker", self.name]

    async def start(self) -> asyncio.subprocess.Process:
        # Its own session: a Ctrl-C in the terminal reaches the supervisor alone, which stops
        # the workers in order (a worker ending on its own would be restarted).
        self.process = await asyncio.create_subprocess_exec(
            *self.command(), env=self.environment, start_new_session=True,
            pass_fds=[fd for fd in self.fds.values() if fd is not None])
        return self.process


def plan_workers(settings: Settings, sockets: NodeSockets, *, node: str, dsn: str, metrics_dir: Path,
                 coap_workers: int, http_workers: int,
                 environ: Mapping[str, str] = os.environ) -> list[Worker]:
    """The node's workers: coap-1..N on their slots' sockets, http-1..M on the shared one; the
    scheduler (and the city-wide gauges of the metrics) in http-1, else coap-1."""
    names = [f"coap-{k}" for k in range(1, coap_workers + 1)] + [f"http-{k}" for k in range(1, http_workers + 1)]
    scheduler = "http-1" if http_workers else "coap-1"
    workers = []
    for name in names:
        if name.startswith("coap-"):
            slot = sockets.coap[int(name.removeprefix("coap-")) - 1]
            fds = {"coap": slot.coap.fileno(), "coaps": slot.coaps.fileno() if slot.coaps is not None else None}
        else:
            fds = {"http": sockets.http.fileno()}
        env = {**environ, **worker_settings_environment(settings),
               "FLEET_DATABASE_URL": dsn, WORKER_ENV: name, NODE_ENV: node, FDS_ENV: json.dumps(fds),
               METRICS_SOCKET_ENV: str(metrics_dir / f"{name}.sock"), COAP_WORKERS_ENV: str(coap_workers),
               SCHEDULER_ENV: "1" if name == scheduler else "0", SUPERVISOR_PID_ENV: str(os.getpid())}
        workers.append(Worker(name, fds, env))
    return workers


def _ended(returncode: int) -> dict[str, object]:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return {"signal": signal.Signals(-returncode).name}
    return {"exit_code": returncode}


class Node:
    """The running workers: each kept alive by a task of its own until the node stops."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)
        self.stopping = False

    async def keep(self, worker: Worker) -> None:
        """Run the worker; when it dies, log it and start it again after a back-off."""
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF_S
        while not self.stopping:
            started = loop.time()
            try:
                process = await worker.start()
            except OSError as exc:  # no fork (EAGAIN, ENOMEM): this slot must not be given up for it
                log.error("worker could not be started", worker=worker.name, error=str(exc), restart_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if self.stopping:  # started as the node began to stop: after the others had their SIGTERM
                process.terminate()
            log.debug("worker started", worker=worker.name, pid=process.pid)
            returncode = await process.wait()
            if self.stopping:
                return
            if loop.time() - started >= STEADY_S:
                backoff = FIRST_BACKOFF_S
            worker.restarts += 1
            log.error("worker stopped unexpectedly", worker=worker.name, pid=process.pid, **_ended(returncode),
                      restart_in_s=backoff, restarts=worker.restarts)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def running(self) -> list[asyncio.subprocess.Process]:
        return [w.process for w in self.workers if w.process is not None and w.process.returncode is None]

    def signal_all(self, sig: signal.Signals) -> None:
        for process in self.running():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    async def stop(self, keepers: Sequence[asyncio.Task], killed: asyncio.Event) -> None:
        """SIGTERM to every worker (each drains), SIGKILL to what is left after STOP_S or at once
        when `killed` is set (a second Ctrl-C)."""
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        waiting = asyncio.gather(*(p.wait() for p in self.running()))
        killing = asyncio.ensure_future(killed.wait())
        done, _ = await asyncio.wait([waiting, killing], timeout=STOP_S, return_when=asyncio.FIRST_COMPLETED)
        if waiting not in done:
            left = [w.name for w in self.workers if w.process is not None and w.process.returncode is None]
            if killing in done:
                log.warning("workers killed: a second Ctrl-C", workers=left)
            else:
                log.warning("workers killed: they did not stop in time", workers=left, waited_s=STOP_S)
            self.signal_all(signal.SIGKILL)
        await waiting
        killing.cancel()
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)


async def run_node(settings: Settings, *, coap_workers: int, http_workers: int,
                   extra: Sequence[Callable[[], Awaitable[None]]] = ()) -> int:
    """What `fleet serve` runs after its ports were checked (and `fleet demo`, its simulator
    and collection as `extra`): until SIGTERM or Ctrl-C (0), or until an `extra` ends (1)."""
    set_worker("supervisor")
    dsn = await asyncio.to_thread(functools.partial(resolve_dsn, settings, workers=coap_workers + http_workers))
    await migrate_database(dsn, settings)  # once, here: the workers open the database without migrating
    try:
        sockets = NodeSockets.bind(settings, coap_workers, http_workers)
    except OSError as exc:  # taken since api.cli checked, or a CoAP port held without SO_REUSEPORT
        raise SystemExit(f"fleet: cannot bind the node's sockets: {exc.strerror or exc}") from None
    settings = sockets.ports(settings)
    metrics_dir = Path(tempfile.mkdtemp(prefix="fleet-node-"))  # 0700: the workers' metrics need no auth
    node = node_name()  # host:pid, which the workers' names extend (host:pid/coap-1)
    guard = Supervisor(Health())
    if not settings.database.url:
        guard.start("embedded-postgres", EmbeddedWatchdog(settings.database.data_dir).run)
    running = Node(plan_workers(settings, sockets, node=node, dsn=dsn, metrics_dir=metrics_dir,
                                coap_workers=coap_workers, http_workers=http_workers))
    loop = asyncio.get_running_loop()
    stop, killed = asyncio.Event(), asyncio.Event()

    def interrupted() -> None:
        if stop.is_set():
            killed.set()  # a second Ctrl-C: no more waiting
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, interrupted)
    keepers = [asyncio.create_task(running.keep(worker)) for worker in running.workers]
    extras = [asyncio.create_task(component()) for component in extra]
    _log_serving(settings, node, coap_workers, http_workers)
    stopper = asyncio.create_task(stop.wait())
    metrics_paths = {worker.name: worker.environment[METRICS_SOCKET_ENV] for worker in running.workers}
    try:
        async with serving_node_metrics(settings, metrics_paths):
            return await _until_stopped(running, keepers, extras, stopper, killed)
    finally:
        for task in [*keepers, *extras]:
            task.cancel()
        running.signal_all(signal.SIGKILL)  # only if the lines above were cut short
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
        await guard.stop()
        sockets.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _until_stopped(running: Node, keepers: list[asyncio.Task], extras: list[asyncio.Task],
                         stopper: asyncio.Task, killed: asyncio.Event) -> int:
    done, _ = await asyncio.wait([stopper, *extras], return_when=asyncio.FIRST_COMPLETED)
    failed = [task for task in done if task is not stopper]
    for task in failed:
        exc = None if task.cancelled() else task.exception()
        log.error("component stopped; stopping the node", exc_info=exc or None)
    log.info("node stopping", workers=len(running.workers))
    for task in [*extras, stopper]:
        task.cancel()
    await asyncio.gather(*extras, stopper, return_exceptions=True)
    await running.stop(keepers, killed)
    return 1 if failed else 0


@contextlib.asynccontextmanager
async def serving_node_metrics(settings: Settings, paths: dict[str, str]) -> AsyncIterator[None]:
    """The node's /metrics (its workers' merged) on the metrics port for as long as the block
    runs; a port that cannot be bound stops the node with one line saying which setting moves it."""
    from api.metrics import MetricsPortTaken, NodeMetrics

    try:
        async with NodeMetrics(settings.metrics, lambda: paths).serving():
            yield
    except MetricsPortTaken as exc:
        raise SystemExit(f"fleet: {exc}") from None  # as api.cli.main words its one-line errors


def _log_serving(settings: Settings, node: str, coap_workers: int, http_workers: int) -> None:
    from api.commands import coaps_listening, metrics_url

    http = f"http://{settings.http.host}:{settings.http.port}" if http_workers else "off"
    log.info("fleet serving", node=node, http=http, docs=f"{http}/schema" if http_workers else None,
             coap=f"udp/{settings.coap.port}" if coap_workers else "off",
             coaps=coaps_listening(settings) if coap_workers else "off",
             metrics=metrics_url(settings), workers={"coap": coap_workers, "http": http_workers})
