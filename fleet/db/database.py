"""The asyncpg pools and the two kinds of transaction Fleet runs: tenant-scoped and system."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import asyncpg
import msgspec

from fleet.db.roles import TENANT_ROLE, ServiceLogins, service_logins
from fleet.errors import ServiceBusy

# How long a REST request's transaction waits for a pooled connection before the client is told
# to come back later (503), rather than piling up behind a flood of requests.
ACQUIRE_TIMEOUT_S = 10.0

_json_encoder = msgspec.json.Encoder()


_json_decoder = msgspec.json.Decoder()


def _encode_jsonb(value: object) -> bytes:
    # Binary jsonb is a version byte followed by the JSON text; binary lets COPY carry it too.
    return b"\x01" + _json_encoder.encode(value)


def _decode_jsonb(data: bytes) -> object:
    return _json_decoder.decode(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=_encode_jsonb,
                              decoder=_decode_jsonb, format="binary")
    await conn.set_type_codec("json", schema="pg_catalog", encoder=_json_encoder.encode,
                              decoder=_json_decoder.decode, format="binary")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release reset (RESET ALL, UNLISTEN, advisory unlock): every tenant
    setting Fleet makes is transaction-local, listeners and locks are released by their owners,
    and the reset costs two round trips on every request."""


async def _pool(dsn: str, min_size: int, max_size: int, application_name: str) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, reset=_keep_session,
        server_settings={"application_name": application_name, "jit": "off"},
    )


class Database:
    """Owns two pools on two logins and hands out transactions that carry the caller's city.

    `tenant_pool` logs in as `fleet_app`, which sees one city at a time and can become nothing
    else; every tenant transaction of the REST API runs there. `pool` logs in as
    `fleet_system` for cross-city work (devices, dispatcher, scheduler, key lookup); being
    separate, device-side work is never starved by REST requests holding connections.
    """

    def __init__(self, pool: asyncpg.Pool, tenant_pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.tenant_pool = tenant_pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2, max_size: int = 10,
                      system_min_size: int | None = None, system_max_size: int | None = None,
                      service_password: str | None = None, name: str = "fleet") -> Database:
        """Connect the service logins on the server and database of `dsn` (the admin DSN that
        runs migrations; only its host, port, database and options are used here)."""
        return await cls.connect_logins(
            service_logins(dsn, service_password), min_size=min_size, max_size=max_size,
            system_min_size=system_min_size, system_max_size=system_max_size, name=name)

    @classmethod
    async def connect_logins(cls, logins: ServiceLogins, *, min_size: int = 2, max_size: int = 10,
                             system_min_size: int | None = None, system_max_size: int | None = None,
                             name: str = "fleet") -> Database:
        system = await _pool(logins.system_dsn, min_size if system_min_size is None else system_min_size,
                             max_size if system_max_size is None else system_max_size, name)
        try:
            tenant = await _pool(logins.tenant_dsn, min(min_size, 1), max_size, f"{name}-api")
        except BaseException:
            await system.close()
            raise
        return cls(system, tenant)

    async def close(self) -> None:
        await asyncio.gather(self.pool.close(), self.tenant_pool.close())

    def terminate(self) -> None:
        self.pool.terminate()
        self.tenant_pool.terminate()

    @asynccontextmanager
    async def tenant_tx(self, tenant_id: UUID, *, readonly: bool = False,
                        conn: asyncpg.Connection | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A transaction in which PostgreSQL itself only shows this city's rows; on `conn` when
        given (a caller holding a session lock across transactions), else on a pooled one."""
        if conn is not None:
            async with self._tenant_tx_on(conn, tenant_id, readonly) as tx:
                yield tx
            return
        async with _acquired(self.tenant_pool) as pooled:
            async with self._tenant_tx_on(pooled, tenant_id, readonly) as tx:
                yield tx

    @staticmethod
    @asynccontextmanager
    async def _tenant_tx_on(conn: asyncpg.Connection, tenant_id: UUID, readonly: bool) -> AsyncIterator[asyncpg.Connection]:
        async with conn.transaction(readonly=readonly):
            await conn.execute(
                "select set_config('fleet.tenant_id', $1, true), set_config('role', $2, true)",
                str(tenant_id), TENANT_ROLE,
            )
            yield conn

    @asynccontextmanager
    async def system_tx(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that crosses cities: key lookup, device registration, sweeps, admin CLI.

        It waits for a connection as long as it takes: the device side's work is bounded by
        its own budgets (the writer's backlog, the dispatcher's slots), and during a
        registration storm the reads after each Register queue here rather than fail.
        """
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                yield conn


@asynccontextmanager
async def _acquired(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
    except TimeoutError:
        raise ServiceBusy("every database connection is busy; try again shortly") from None
    try:
        yield conn
    finally:
        await pool.release(conn)
