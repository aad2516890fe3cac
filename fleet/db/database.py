"""The asyncpg pool and the two kinds of transaction Fleet runs: tenant-scoped and system."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import asyncpg
import msgspec

# The role every tenant-scoped transaction switches to; row-level security applies to it
# (superusers and table owners bypass RLS, so the connecting role alone is not enough).
TENANT_ROLE = "fleet_app"

_json_encoder = msgspec.json.Encoder()


_json_decoder = msgspec.json.Decoder()


def _encode_jsonb(value: object) -> bytes:
    # Binary jsonb is a version byte followed by the JSON text; binary lets COPY carry it too.
    return b"\x01" + _json_encoder.encode(value)


def _decode_jsonb(data: bytes) -> object:
    return _json_decoder.decode(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=_encode_jsonb,
                              decoder=_decode_jsonb, format="binary")
    await conn.set_type_codec("json", schema="pg_catalog", encoder=_json_encoder.encode,
                              decoder=_json_decoder.decode, format="binary")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release reset (RESET ALL, UNLISTEN, advisory unlock): every tenant
    setting Fleet makes is transaction-local, listeners and locks are released by their owners,
    and the reset costs two round trips on every request."""


class Database:
    """Owns the pool; hands out transactions that carry the caller's city."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2, max_size: int = 10) -> Database:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_keep_session,
            server_settings={"application_name": "fleet", "jit": "off"},
        )
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def tenant_tx(self, tenant_id: UUID, *, readonly: bool = False,
                        conn: asyncpg.Connection | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A transaction in which PostgreSQL itself only shows this city's rows; on `conn` when
        given (a caller holding a session lock across transactions), else on a pooled one."""
        if conn is not None:
            async with self._tenant_tx_on(conn, tenant_id, readonly) as tx:
                yield tx
            return
        async with self.pool.acquire() as pooled:
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
        """A transaction that crosses cities: key lookup, device registration, sweeps, admin CLI."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                yield conn
