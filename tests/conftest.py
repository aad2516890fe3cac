"""Shared fixtures: a real PostgreSQL (embedded, or FLEET_TEST_DATABASE_URL), a fresh database per
test cloned from a migrated template, cities with keys, and the API served over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import uvicorn

from api.app import create_app
from fleet.access.models import Principal, Role
from fleet.access.service import ApiKeyService, TenantService, system_principal
from fleet.db import Database
from fleet.db.embedded import start_embedded
from fleet.db.migrate import migrate
from fleet.settings import HttpSettings, SecuritySettings

# Durability is irrelevant for throw-away test data; this makes the suite several times faster.
# Processes the tests start (`fleet serve`, `fleet coap`, the runtime in-process) would all reach
# for the one default metrics port, two xdist workers at once; tests that scrape choose a port.
os.environ.setdefault("FLEET_METRICS_PORT", "0")
# Device keys are stored encrypted under this (fleet.security.crypto); the processes tests start
# (`fleet serve`, `fleet coap`) read the same one.
TEST_CREDENTIALS_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
os.environ.setdefault("FLEET_CREDENTIALS_KEY", TEST_CREDENTIALS_KEY)
TEST_SECURITY = SecuritySettings(credentials_key=bytes.fromhex(TEST_CREDENTIALS_KEY))

TEST_TUNING = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_dsn() -> str:
    """A DSN of a maintenance database on a server where tests may create databases."""
    configured = os.environ.get("FLEET_TEST_DATABASE_URL")
    if configured:
        return configured
    data_dir = Path(tempfile.mkdtemp(prefix="fleet-test-pg-"))
    return start_embedded(data_dir, tuning=TEST_TUNING)


@pytest.fixture(scope="session")
async def template_database(server_dsn: str) -> AsyncIterator[str]:
    name = f"fleet_tpl_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'create database "{name}"')
        conn = await asyncpg.connect(_with_database(server_dsn, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield name
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


@asynccontextmanager
async def migrated_database(server_dsn: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database (its DSN), dropped afterwards."""
    name = f"fleet_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'create database "{name}" template "{template_database}"')
        yield _with_database(server_dsn, name)
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


@pytest.fixture
async def database_dsn(server_dsn: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    async with migrated_database(server_dsn, template_database) as dsn:
        yield dsn


@pytest.fixture
async def empty_database_dsn(server_dsn: str) -> AsyncIterator[str]:
    """A fresh database nothing has been migrated into, dropped afterwards."""
    name = f"fleet_e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'create database "{name}"')
        yield _with_database(server_dsn, name)
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


@pytest.fixture
async def db(database_dsn: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_dsn, min_size=1, max_size=8)
    try:
        yield database
    finally:
        try:
            await asyncio.wait_for(database.close(), 10)
        except TimeoutError:
            # A connection still checked out would hang the suite; report it and move on.
            database.pool.terminate()
            raise AssertionError("a database connection was never released during this test") from None


@dataclass
class City:
    slug: str
    principal: Principal
    key: str
    client: httpx.AsyncClient | None = None

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.principal.tenant_id


async def make_city(db: Database, slug: str, role: Role = Role.ADMIN, timezone: str = "Asia/Seoul", *,
                    allow_nosec_devices: bool = True) -> City:
    """A city whose devices may register over plain CoAP unless told otherwise: the suite's
    devices do (new cities outside tests refuse NoSec)."""
    tenant = await TenantService(db).create(slug, slug.title(), timezone, allow_nosec_devices=allow_nosec_devices)
    issued = await ApiKeyService(db).issue(system_principal(tenant), role, f"{slug} test key")
    principal = Principal(tenant.id, tenant.slug, tenant.timezone, role, issued.key.id)
    return City(slug, principal, issued.secret)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def blocked_by(holder: asyncpg.Connection, waiter: asyncio.Task) -> None:
    """Return once some session waits on a lock `holder` holds (the race under test is set),
    without guessing how long that takes; fails if `waiter` ends instead."""
    pid = await holder.fetchval("select pg_backend_pid()")
    while not await holder.fetchval(
            "select exists (select 1 from pg_locks l where not l.granted and $1 = any(pg_blocking_pids(l.pid)))", pid):
        assert not waiter.done(), f"it never waited on the lock: {waiter.result()!r}"
        await asyncio.sleep(0.01)


class Explained:
    """Wraps a connection: a repository's reads through it answer nothing and keep their plans
    (`EXPLAIN (costs off)`; `generic=True`: the plan a prepared statement settles on, its
    parameters unknown), so a test can say which indexes its SQL walks."""

    def __init__(self, conn: asyncpg.Connection, *, generic: bool = False) -> None:
        self.conn = conn
        self.options = "costs off, generic_plan" if generic else "costs off"
        self.plans: list[str] = []

    async def fetch(self, sql: str, *args) -> list:
        rows = await self.conn.fetch(f"explain ({self.options}) {sql}", *args)
        self.plans.append("\n".join(r[0] for r in rows))
        return []


TEST_MAX_BODY_BYTES = 4 * 1024 * 1024


class PromptServer(uvicorn.Server):
    """uvicorn's server, stopped as soon as it may be: uvicorn notices `should_exit` at its next
    0.1 s tick, then sleeps 0.1 s before it waits (polling every 0.1 s) for connections and
    tasks to finish, ~0.2 s of idle time per test. The same steps in the same order here, with
    the exit noticed at once and the waits polled every 5 ms."""

    _exit_requested: asyncio.Event | None = None

    def exit(self) -> None:
        self.should_exit = True
        if self._exit_requested is not None:
            self._exit_requested.set()

    async def main_loop(self) -> None:
        self._exit_requested = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_requested.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        # No graceful-shutdown timeout, as uvicorn's default: a request never answered hangs
        # the test until pytest-timeout reports it.
        while self.server_state.connections or self.server_state.tasks:
            await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


@asynccontextmanager
async def serve_api(db: Database, http: HttpSettings | None = None, *,
                    extra_services: dict[str, object] | None = None, security: SecuritySettings = TEST_SECURITY,
                    **services: object) -> AsyncIterator[str]:
    """Serve the API for `db` with uvicorn on a real local port; yields its base URL. Services
    given by name (e.g. `health=`) replace the app's own."""
    port = free_port()
    http = replace(http or HttpSettings(max_body_bytes=TEST_MAX_BODY_BYTES), port=port)
    app = create_app(db, http, extra_services={**(extra_services or {}), **services} or None,
                     security=security)
    server = PromptServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                         access_log=False, lifespan="on"))
    server.install_signal_handlers = lambda: None
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.exit()
        await task


@pytest.fixture
async def api_url(db: Database) -> AsyncIterator[str]:
    """The API served by uvicorn on a real local port for the duration of one test."""
    async with serve_api(db) as url:
        yield url


@pytest.fixture
async def city_factory(db: Database, api_url: str) -> AsyncIterator:
    clients: list[httpx.AsyncClient] = []

    async def factory(slug: str, role: Role = Role.ADMIN) -> City:
        city = await make_city(db, slug, role)
        city.client = httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {city.key}"})
        clients.append(city.client)
        return city

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
async def seoul(city_factory) -> City:
    return await city_factory("seoul")


@pytest.fixture
async def busan(city_factory) -> City:
    return await city_factory("busan")
