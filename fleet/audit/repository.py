"""SQL for the audit log."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from fleet.audit.models import AuditEntry, AuditQuery


class AuditRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def append(self, tenant_id: UUID, api_key_id: UUID | None, actor: str, action: str,
                     entity_type: str, entity_id: str | None, before: Any, after: Any,
                     request_id: str | None) -> None:
        await self.conn.execute(
            """insert into audit_log
                   (tenant_id, api_key_id, actor, action, entity_type, entity_id, before, after, request_id)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            tenant_id, api_key_id, actor, action, entity_type, entity_id, before, after, request_id)

    async def append_many(self, rows: list[tuple]) -> None:
        """Bulk form for imports: one audit row per entity in one statement.

        Not COPY: PostgreSQL refuses COPY into tables under row-level security.
        """
        columns = list(zip(*rows, strict=True)) if rows else [[]] * 9
        await self.conn.execute(
            """insert into audit_log
                   (tenant_id, api_key_id, actor, action, entity_type, entity_id, before, after, request_id)
               select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                    $6::text[], $7::jsonb[], $8::jsonb[], $9::text[])""",
            *[list(c) for c in columns])

    async def search(self, tenant_id: UUID, query: AuditQuery) -> list[AuditEntry]:
        rows = await self.conn.fetch(
            """select id, at, api_key_id, actor, action, entity_type, entity_id, before, after, request_id
               from audit_log
               where tenant_id = $1
                 and ($2::text is null or entity_type = $2)
                 and ($3::text is null or entity_id = $3)
                 and ($4::text is null or action = $4)
                 and ($5::uuid is null or api_key_id = $5)
                 and ($6::timestamptz is null or at >= $6)
                 and ($7::timestamptz is null or at < $7)
                 and ($8::bigint is null or id < $8)
               order by id desc
               limit $9""",
            tenant_id, query.entity_type, query.entity_id, query.action, query.api_key_id,
            query.since, query.until, query.before_id, query.limit)
        return [AuditEntry(**dict(r)) for r in rows]
