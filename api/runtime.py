"""Composition root: opens the database, migrates, and runs the HTTP (and later CoAP) servers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import structlog
import uvicorn

from fleet.db import Database
from fleet.db.embedded import WRITE_HEAVY, start_embedded
from fleet.db.migrate import migrate
from fleet.settings import Settings

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


def resolve_dsn(settings: Settings) -> str:
    if settings.database.url:
        return settings.database.url
    return start_embedded(settings.database.data_dir, tuning=WRITE_HEAVY)


async def migrate_database(dsn: str, settings: Settings) -> list[int]:
    """Run the migrations on a connection of the admin DSN, closed again straight after: the
    running service never keeps a connection that owns anything."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "fleet-migrate"})
    try:
        return await migrate(conn, service_password=settings.database.service_password)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def open_database(settings: Settings, *, run_migrations: bool = True) -> AsyncIterator[Database]:
    dsn = await asyncio.to_thread(resolve_dsn, settings)
    if run_migrations:
        await migrate_database(dsn, settings)
    db = await Database.connect(dsn, min_size=settings.database.pool_min,
                                max_size=settings.database.pool_max,
                                system_min_size=settings.database.pool_min,
                                system_max_size=settings.database.system_pool_max,
                                service_password=settings.database.service_password)
    try:
        yield db
    finally:
        await db.close()


GRACE_S = 5  # how long requests under way may take to finish when Fleet stops


async def run_http(db: Database, settings: Settings, host: str, port: int) -> None:
    # Imported here so the console's admin subcommands start without loading the web framework.
    from api.app import create_app

    app = create_app(db, settings.http)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="on", server_header=False, timeout_graceful_shutdown=GRACE_S)
    server = uvicorn.Server(config)
    # The composition root owns signals, so every component shuts down together.
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        # Stopping: let requests under way finish (up to GRACE_S) and the app's lifespan end,
        # rather than cut them off mid-transaction.
        server.should_exit = True
        await serving
        raise


async def until_stopped(*components: Callable[[], Awaitable[None]]) -> None:
    """Run components until Ctrl-C / SIGTERM or until one of them fails."""
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
    for task in done:
        if task is not stopper and not task.cancelled() and task.exception():
            raise task.exception()
