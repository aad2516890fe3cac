"""SQL for crews, their home bases and the positions their tablets report."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from fleet.crews.models import Crew, CrewPosition, Place


def _crew(row: asyncpg.Record) -> Crew:
    home = Place(row["home_lat"], row["home_lon"]) if row["home_lat"] is not None else None
    position = (CrewPosition(row["position_lat"], row["position_lon"], row["position_at"],
                             row["position_accuracy_m"]) if row["position_at"] is not None else None)
    return Crew(row["id"], row["tenant_id"], row["name"], row["created_at"], home, position)


class CrewRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(self, tenant_id: UUID, name: str, home_base: Place | None = None) -> Crew:
        return _crew(await self.conn.fetchrow(
            "insert into crews (tenant_id, name, home_lat, home_lon) values ($1, $2, $3, $4) returning *",
            tenant_id, name, home_base.lat if home_base else None, home_base.lon if home_base else None))

    async def ensure(self, tenant_id: UUID, name: str) -> tuple[Crew, bool]:
        """The city's crew of that name, created if missing; True when created now."""
        row = await self.conn.fetchrow(
            """insert into crews (tenant_id, name) values ($1, $2)
               on conflict (tenant_id, name) do nothing returning *""", tenant_id, name)
        if row is not None:
            return _crew(row), True
        return await self.by_name(tenant_id, name), False

    async def get(self, tenant_id: UUID, crew_id: UUID, *, for_update: bool = False) -> Crew | None:
        row = await self.conn.fetchrow(
            f"select * from crews where tenant_id = $1 and id = $2{' for update' if for_update else ''}",
            tenant_id, crew_id)
        return _crew(row) if row else None

    async def by_name(self, tenant_id: UUID, name: str) -> Crew | None:
        row = await self.conn.fetchrow("select * from crews where tenant_id = $1 and name = $2", tenant_id, name)
        return _crew(row) if row else None

    async def all(self, tenant_id: UUID) -> list[Crew]:
        return [_crew(r) for r in await self.conn.fetch(
            "select * from crews where tenant_id = $1 order by name, id", tenant_id)]

    async def update(self, tenant_id: UUID, crew_id: UUID, name: str, home_base: Place | None) -> Crew:
        return _crew(await self.conn.fetchrow(
            """update crews set name = $3, home_lat = $4, home_lon = $5
               where tenant_id = $1 and id = $2 returning *""",
            tenant_id, crew_id, name, home_base.lat if home_base else None, home_base.lon if home_base else None))

    async def report_position(self, tenant_id: UUID, crew_id: UUID, lat: float, lon: float,
                              accuracy_m: float | None, at: datetime) -> Crew:
        """Keep the newest fix: a tablet's late, older report (or another node's) never replaces it."""
        await self.conn.execute(
            """update crews set position_lat = $3, position_lon = $4, position_accuracy_m = $5, position_at = $6
               where tenant_id = $1 and id = $2 and (position_at is null or position_at <= $6)""",
            tenant_id, crew_id, lat, lon, accuracy_m, at)
        crew = await self.get(tenant_id, crew_id)
        assert crew is not None  # a crew key's crew exists (foreign key)
        return crew
