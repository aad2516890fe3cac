"""Creating and listing crews; each use case owns its transaction and audits its change."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from fleet.access.models import Permission, Principal
from fleet.audit.service import record
from fleet.crews.models import Crew
from fleet.crews.repository import CrewRepository
from fleet.db import Database
from fleet.errors import Conflict, FieldError, NotFound, ValidationFailed
from fleet.registry.service import require


class CrewService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, principal: Principal, name: str) -> Crew:
        require(principal, Permission.MANAGE_WORK_ORDERS)
        name = name.strip()
        if not name or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise ValidationFailed("invalid crew", [FieldError("name", "must be a non-empty line of text")])
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            try:
                async with conn.transaction():
                    crew = await CrewRepository(conn).insert(principal.tenant_id, name)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"a crew named {name!r} already exists") from None
            await record(conn, principal, "crew.create", "crew", crew.id, None, crew)
        return crew

    async def ensure(self, principal: Principal, name: str) -> Crew:
        """The city's crew of that name, created (and audited) if it does not exist yet."""
        require(principal, Permission.MANAGE_WORK_ORDERS)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            crew, created = await CrewRepository(conn).ensure(principal.tenant_id, name)
            if created:
                await record(conn, principal, "crew.create", "crew", crew.id, None, crew)
        return crew

    async def get(self, principal: Principal, crew_id: UUID) -> Crew:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            crew = await CrewRepository(conn).get(principal.tenant_id, crew_id)
        if crew is None:
            raise NotFound(f"crew {crew_id} not found")
        return crew

    async def by_name(self, principal: Principal, name: str) -> Crew:
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            crew = await CrewRepository(conn).by_name(principal.tenant_id, name)
        if crew is None:
            raise NotFound(f"crew {name!r} not found in {principal.tenant_slug}")
        return crew

    async def list(self, principal: Principal) -> list[Crew]:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await CrewRepository(conn).all(principal.tenant_id)
