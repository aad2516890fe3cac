"""Crews: create, rename and base them, list them, and take the positions their tablets report;
each use case owns its transaction and audits the city's changes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from msgspec import UNSET

from fleet.access.models import Permission, Principal
from fleet.audit.service import record
from fleet.crews.models import Crew, CrewUpdate, Place, PositionReport
from fleet.crews.repository import CrewRepository
from fleet.db import Database
from fleet.errors import Conflict, FieldError, NotFound, ValidationFailed
from fleet.registry.service import require


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValidationFailed("invalid crew", [FieldError("name", "must be a non-empty line of text")])
    return name


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CrewService:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.db = db
        self.clock = clock

    async def create(self, principal: Principal, name: str, home_base: Place | None = None) -> Crew:
        require(principal, Permission.PLAN_WORK)
        name = _checked_name(name)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            try:
                async with conn.transaction():
                    crew = await CrewRepository(conn).insert(principal.tenant_id, name, home_base)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"a crew named {name!r} already exists") from None
            await record(conn, principal, "crew.create", "crew", crew.id, None, crew)
        return crew

    async def ensure(self, principal: Principal, name: str) -> Crew:
        """The city's crew of that name, created (and audited) if it does not exist yet."""
        require(principal, Permission.PLAN_WORK)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            crew, created = await CrewRepository(conn).ensure(principal.tenant_id, name)
            if created:
                await record(conn, principal, "crew.create", "crew", crew.id, None, crew)
        return crew

    async def update(self, principal: Principal, crew_id: UUID, data: CrewUpdate) -> Crew:
        """Rename a crew or set (null: remove) its home base."""
        require(principal, Permission.PLAN_WORK)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = CrewRepository(conn)
            before = await repo.get(principal.tenant_id, crew_id, for_update=True)
            if before is None:
                raise NotFound(f"crew {crew_id} not found")
            name = before.name if data.name is UNSET else _checked_name(data.name)
            home_base = before.home_base if data.home_base is UNSET else data.home_base
            try:
                async with conn.transaction():
                    after = await repo.update(principal.tenant_id, crew_id, name, home_base)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"a crew named {name!r} already exists") from None
            if after != before:
                await record(conn, principal, "crew.update", "crew", crew_id, before, after)
        return after

    async def report_position(self, principal: Principal, report: PositionReport) -> Crew:
        """Where the calling crew key's crew is now. Not audited: a tablet reports every few
        minutes all day, and the crew row keeps the newest fix with its time."""
        require(principal, Permission.READ)
        if principal.crew_id is None:
            raise ValidationFailed("this API key belongs to no crew", [FieldError(
                "crew", "only a crew key (fleet apikey create --role crew --crew NAME) reports a position")])
        now = self.clock()
        at = now if report.at is None or report.at > now else report.at
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            return await CrewRepository(conn).report_position(
                principal.tenant_id, principal.crew_id, report.lat, report.lon, report.accuracy_m, at)

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
