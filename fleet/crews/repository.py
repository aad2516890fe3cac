"""SQL for crews."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from fleet.crews.models import Crew


def _crew(row: asyncpg.Record) -> Crew:
    return Crew(row["id"], row["tenant_id"], row["name"], row["created_at"])


class CrewRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(self, tenant_id: UUID, name: str) -> Crew:
        return _crew(await self.conn.fetchrow(
            "insert into crews (tenant_id, name) values ($1, $2) returning *", tenant_id, name))

    async def ensure(self, tenant_id: UUID, name: str) -> tuple[Crew, bool]:
        """The city's crew of that name, created if missing; True when created now."""
        row = await self.conn.fetchrow(
            """insert into crews (tenant_id, name) values ($1, $2)
               on conflict (tenant_id, name) do nothing returning *""", tenant_id, name)
        if row is not None:
            return _crew(row), True
        return await self.by_name(tenant_id, name), False

    async def get(self, tenant_id: UUID, crew_id: UUID) -> Crew | None:
        row = await self.conn.fetchrow("select * from crews where tenant_id = $1 and id = $2", tenant_id, crew_id)
        return _crew(row) if row else None

    async def by_name(self, tenant_id: UUID, name: str) -> Crew | None:
        row = await self.conn.fetchrow("select * from crews where tenant_id = $1 and name = $2", tenant_id, name)
        return _crew(row) if row else None

    async def all(self, tenant_id: UUID) -> list[Crew]:
        return [_crew(r) for r in await self.conn.fetch(
            "select * from crews where tenant_id = $1 order by name, id", tenant_id)]
