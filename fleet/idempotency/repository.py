"""SQL for idempotency keys."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg


class IdempotencyRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def claim(self, tenant_id: UUID, api_key_id: UUID, key: str, method: str, path: str,
                    body_hash: bytes) -> bool:
        """True if this call made the claim; a concurrent claimant of the same key waits on the
        unique index until this transaction ends, then finds the row."""
        return await self.conn.fetchval(
            """insert into idempotency_keys (tenant_id, api_key_id, key, method, path, body_hash)
               values ($1, $2, $3, $4, $5, $6)
               on conflict (tenant_id, api_key_id, key) do nothing
               returning true""", tenant_id, api_key_id, key, method, path, body_hash) or False

    async def get(self, tenant_id: UUID, api_key_id: UUID, key: str) -> asyncpg.Record | None:
        return await self.conn.fetchrow(
            """select method, path, body_hash, state, status, headers, body, created_at from idempotency_keys
               where tenant_id = $1 and api_key_id = $2 and key = $3 for update""", tenant_id, api_key_id, key)

    async def take_over(self, tenant_id: UUID, api_key_id: UUID, key: str, stale_before: datetime) -> bool:
        return await self.conn.fetchval(
            """update idempotency_keys set created_at = now()
               where tenant_id = $1 and api_key_id = $2 and key = $3 and state = 'in_progress'
                 and created_at < $4 returning true""", tenant_id, api_key_id, key, stale_before) or False

    async def complete(self, tenant_id: UUID, api_key_id: UUID, key: str, status: int,
                       headers: list[list[str]], body: bytes) -> None:
        await self.conn.execute(
            """update idempotency_keys set state = 'done', status = $4, headers = $5, body = $6
               where tenant_id = $1 and api_key_id = $2 and key = $3""",
            tenant_id, api_key_id, key, status, headers, body)

    async def release(self, tenant_id: UUID, api_key_id: UUID, key: str) -> None:
        await self.conn.execute(
            """delete from idempotency_keys
               where tenant_id = $1 and api_key_id = $2 and key = $3 and state = 'in_progress'""",
            tenant_id, api_key_id, key)

    async def prune(self, before: datetime, batch: int = 10_000) -> int:
        status = await self.conn.execute(
            """delete from idempotency_keys where ctid in (
                   select ctid from idempotency_keys where created_at < $1 limit $2)""", before, batch)
        return int(status.split()[-1])
