"""Composition root: opens the database, migrates, and runs the HTTP (and later CoAP) servers."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import structlog
import uvicorn

from fleet.alarms.evaluator import RuleEvaluator
from fleet.alarms.service import AlarmService
from fleet.commands.repository import ONLY_SLOT, Slot
from fleet.db import Database
from fleet.db.embedded import WRITE_HEAVY, EmbeddedWatchdog, start_embedded
from fleet.db.migrate import migrate
from fleet.db.reach import CONNECT_ERRORS, DatabaseUnreachable, connect
from fleet.firmware.delivery import coaps_server_uri, default_base_uri
from fleet.settings import Settings
from fleet.supervision import Health, Supervisor
from fleet.workorders.service import alarms_changed
from protocols.lwm2m.listener import ListenerSockets, run_coap

log = structlog.get_logger(__name__)

# Objects the collector lets pile up before it looks (CPython's default is 700). A server
# process keeps tens of thousands of live objects per thousand devices (sessions, exchanges in
# flight, the duplicate-detection cache), and the hot paths make no cyclic garbage (measured
# with gc.DEBUG_SAVEALL over a 10,000-light push: none). With the default the collector walked
# those survivors again and again: full collections of 250-370 ms twice per push, younger ones of
# 20-35 ms several times a second, the event loop stalled throughout (bench/dimming).
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Set up the garbage collector for a long-running server; call once, after imports.

    What exists now (modules, classes, functions: about 60,000 objects) lives as long as the
    process, so it is frozen out of every future collection; and collections come seldom
    enough that most young objects have died before one looks at them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# Connections the embedded server takes at least: a node's workers each hold their own pools
# (the REST API's, the device side's and a few of their own: docs/scaling.md); PostgreSQL's
# default 100 is too few for a node of three workers (3 x 33 + 20 with the default pools).
EMBEDDED_MAX_CONNECTIONS = 400
# Beyond a worker's pools: connections it takes for itself (LISTEN, the claimer), and what the
# node's supervisor, `fleet doctor` and an operator's psql take beside the workers.
OWN_CONNECTIONS_PER_WORKER = 3
OTHER_CONNECTIONS = 20


def connections_needed(settings: Settings, workers: int) -> int:
    """What a node of `workers` processes may hold at once on its database (docs/scaling.md)."""
    database = settings.database
    return workers * (database.pool_max + database.system_pool_max + OWN_CONNECTIONS_PER_WORKER) + OTHER_CONNECTIONS


def resolve_dsn(settings: Settings, *, workers: int = 1) -> str:
    """The database's DSN; an embedded server is started (or joined) with room for a node of
    `workers` processes, EMBEDDED_MAX_CONNECTIONS at least (the default counts of a big machine
    need more: 16 cores are 24 workers, about 800)."""
    if settings.database.url:
        return settings.database.url
    return start_embedded(settings.database.data_dir, tuning=WRITE_HEAVY,
                          max_connections=embedded_connections(settings, workers))


def embedded_connections(settings: Settings, workers: int) -> int:
    """`max_connections` of an embedded server for a node of `workers` processes."""
    return max(EMBEDDED_MAX_CONNECTIONS, connections_needed(settings, workers))


async def migrate_database(dsn: str, settings: Settings) -> list[int]:
    """Run the migrations on a connection of the admin DSN, closed again straight after: the
    running service never keeps a connection that owns anything."""
    conn = await connect(dsn, application_name="fleet-migrate")
    try:
        return await migrate(conn, service_password=settings.database.service_password)
    finally:
        await conn.close()


class _PoolFloorRetries(logging.Filter):
    """asyncpg logs a traceback each time it fails to refill its pool while the database is
    away; Fleet's health registry says "database lost" once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to restore the pool connection floor")


logging.getLogger("asyncpg.pool").addFilter(_PoolFloorRetries())


@contextlib.asynccontextmanager
async def open_database(settings: Settings, *, run_migrations: bool = True,
                        health: Health | None = None) -> AsyncIterator[Database]:
    """The pool; and if Fleet started the embedded server, a watchdog that starts it again
    should its postmaster die."""
    dsn = await asyncio.to_thread(resolve_dsn, settings)
    if run_migrations:
        await migrate_database(dsn, settings)
    try:
        db = await Database.connect(dsn, min_size=settings.database.pool_min,
                                    max_size=settings.database.pool_max,
                                    system_min_size=settings.database.pool_min,
                                    system_max_size=settings.database.system_pool_max,
                                    service_password=settings.database.service_password)
    except CONNECT_ERRORS as exc:
        raise DatabaseUnreachable(dsn, exc) from exc
    supervisor = Supervisor(health or Health())
    if not settings.database.url:
        supervisor.start("embedded-postgres", EmbeddedWatchdog(settings.database.data_dir).run)
    try:
        yield db
    finally:
        await supervisor.stop()
        await db.close()


def bind_problem(host: str, port: int, kind: socket.SocketKind) -> str | None:
    """Why a listener could not have `host`:`port` (TCP or UDP), or None: bound and released
    at once, so a command can say so in one line before it starts anything."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=kind,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        return f"cannot resolve {host}: {exc}"
    with socket.socket(family, kind, proto) as probe:
        if kind == socket.SOCK_STREAM:  # as uvicorn does: a closed connection's TIME_WAIT is no owner
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # "::" takes IPv4 too (aiocoap's udp6, uvicorn): see both
            with contextlib.suppress(OSError):
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            probe.bind(address)
        except OSError as exc:
            return "is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
    return None


GRACE_S = 5  # how long requests under way may take to finish when Fleet stops


async def run_http(db: Database, settings: Settings, host: str, port: int,
                   health: Health | None = None, sock: socket.socket | None = None) -> None:
    """The REST API and web pages until cancelled; on `sock` (a listening socket the node's
    supervisor shares among its HTTP workers) when given, else on a socket of its own."""
    # Imported here so the console's admin subcommands start without loading the web framework.
    from api.app import create_app

    app = create_app(db, settings.http, extra_services={"health": health} if health else None,
                     firmware=settings.firmware, routing_url=settings.routing_url, web=settings.web,
                     security=settings.security,
                     # No key, no coaps listener (open_listener): no URI to give devices.
                     coaps_uri=coaps_public_uri(settings) if settings.security.credentials_key else None)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="on", server_header=False, timeout_graceful_shutdown=GRACE_S)
    server = uvicorn.Server(config)
    # The composition root owns signals, so every component shuts down together.
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.ensure_future(server.serve(sockets=[sock] if sock is not None else None))
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        # Stopping: let requests under way finish (up to GRACE_S) and the app's lifespan end,
        # rather than cut them off mid-transaction.
        server.should_exit = True
        await serving
        raise


def firmware_download_uri(settings: Settings) -> str:
    """Where devices download firmware packages: as configured, else this node's CoAP listener
    (on the loopback address when it listens on every address, which is no address to dial)."""
    return settings.firmware.download_base_uri or default_base_uri(settings.coap.host, settings.coap.port)


def coaps_public_uri(settings: Settings) -> str | None:
    """Where devices reach this node's coaps listener (the bootstrap server writes it as their
    server's URI, and devices registered over coaps download firmware there); None: no coaps."""
    return coaps_server_uri(settings.coap.coaps_public_uri, settings.coap.host, settings.coap.coaps_port)


def alarm_service(db: Database) -> AlarmService:
    """How every process builds its alarms: each transition reaches the work orders (opened from
    alarms, proven by the device, reopened by a repeat) in the transaction that made it."""
    return AlarmService(db, on_changes=alarms_changed)


async def run_device_edge(db: Database, settings: Settings, health: Health, *, node: str | None = None,
                          sockets: ListenerSockets | None = None, resume: bool = False,
                          slot: Slot = ONLY_SLOT) -> None:
    """The CoAP/LwM2M listener with every alarm rule judging what its devices commit; a node's
    worker gives its name, the sockets its supervisor bound and whether it takes over from a
    predecessor (protocols.lwm2m.listener.run_coap)."""
    alarms = alarm_service(db)
    rules = RuleEvaluator(db, alarms.apply, settings=alarms.effective_settings)
    await run_coap(db, settings.coap.host, settings.coap.port, in_flight=settings.coap.in_flight,
                   peer_rate=settings.coap.peer_rate, address_rate=settings.coap.address_rate,
                   health=health, alarm_service=alarms, rules=rules, coaps_port=settings.coap.coaps_port or None,
                   security=settings.security, coaps_public_uri=coaps_public_uri(settings),
                   coaps_limits={"source_share": settings.coap.coaps_source_share}, node=node, sockets=sockets,
                   resume=resume,
                   node_timeout=timedelta(seconds=settings.coap.node_timeout_s), slot=slot,
                   followups_per_s=settings.coap.followups_per_worker)


@contextlib.asynccontextmanager
async def serving_metrics(db: Database, settings: Settings) -> AsyncIterator[None]:
    """This process's /metrics for as long as the block runs; a port that cannot be bound
    stops the command with one line saying which setting moves it."""
    from api.metrics import MetricsPortTaken, MetricsServer

    try:
        async with MetricsServer(db, settings.metrics).serving():
            yield
    except MetricsPortTaken as exc:
        raise SystemExit(f"fleet: {exc}") from None  # as main() words its one-line errors


async def supervised(health: Health, name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run one restartable component under a supervisor until cancelled."""
    supervisor = Supervisor(health)
    supervisor.start(name, run)
    try:
        await asyncio.Event().wait()
    finally:
        await supervisor.stop()


async def until_stopped(*components: Callable[[], Awaitable[None]]) -> int:
    """Run components until Ctrl-C / SIGTERM (0) or until one of them ends (1).

    These are the components that are not restarted in place (the HTTP server, the CoAP
    listener with its socket): their tasks inside restart themselves (`Supervisor`), but when
    one of these ends the process stops, non-zero, for the process supervisor to restart it.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(component()) for component in components]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in [*tasks, stopper]:
        task.cancel()
    await asyncio.gather(*tasks, stopper, return_exceptions=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(sig)
    failed = [task for task in done if task is not stopper]
    for task in failed:
        exc = None if task.cancelled() else task.exception()
        log.error("component stopped; stopping the process", exc_info=exc or None)
    return 1 if failed else 0
