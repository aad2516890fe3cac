"""The city's collection set-up as use cases: depots, disposal sites, vehicles, time windows and
settings; each owns its transaction and audits the change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

import asyncpg
import msgspec
from msgspec import UNSET

from fleet.access.models import Permission, Principal
from fleet.audit.service import record
from fleet.collection.models import (CollectionSettings, Depot, DepotCreate, DisposalSite, DisposalSiteCreate,
                                     SettingsUpdate, TimeWindow, TimeWindowCreate, Vehicle, VehicleCreate, clock)
from fleet.collection.repository import SetupRepository
from fleet.db import Database
from fleet.errors import Conflict, FieldError, NotFound, ValidationFailed
from fleet.registry.repository import DeviceRepository
from fleet.registry.service import require


def _invalid(what: str, field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"invalid {what}", [FieldError(field, message)])


def _named(name: str, what: str) -> str:
    name = name.strip()
    if not name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _invalid(what, "name", "must be a non-empty line of text")
    return name


class CollectionService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _create(self, principal: Principal, what: str, insert: Callable[[SetupRepository], Awaitable]):
        require(principal, Permission.PLAN_WORK)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            try:
                async with conn.transaction():
                    created = await insert(SetupRepository(conn))
            except asyncpg.UniqueViolationError:
                raise Conflict(f"a {what.replace('_', ' ')} of that name already exists") from None
            await record(conn, principal, f"collection.{what}.create", f"collection_{what}", created.id,
                         None, created)
        return created

    async def _get(self, principal: Principal, what: str, fetch: Callable[[SetupRepository], Awaitable]):
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            found = await fetch(SetupRepository(conn))
        if found is None:
            raise NotFound(f"{what.replace('_', ' ')} not found")
        return found

    async def _delete(self, principal: Principal, what: str, table: str, entity_id: UUID,
                      fetch: Callable[[SetupRepository], Awaitable],
                      in_use: Callable[[SetupRepository], Awaitable[str | None]] | None = None) -> None:
        require(principal, Permission.PLAN_WORK)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = SetupRepository(conn)
            before = await fetch(repo)
            if before is None:
                raise NotFound(f"{what.replace('_', ' ')} {entity_id} not found")
            if in_use is not None and (why := await in_use(repo)):
                raise Conflict(why)
            try:
                async with conn.transaction():
                    await repo.delete(table, principal.tenant_id, entity_id)
            except asyncpg.ForeignKeyViolationError:
                # Plans' stops keep naming the sites they unloaded at: history is not rewritten.
                raise Conflict(f"{what.replace('_', ' ')} {entity_id} is used by a plan") from None
            await record(conn, principal, f"collection.{what}.delete", f"collection_{what}", entity_id, before, None)

    # -- depots
    async def create_depot(self, principal: Principal, data: DepotCreate) -> Depot:
        data = msgspec.structs.replace(data, name=_named(data.name, "depot"))
        return await self._create(principal, "depot", lambda r: r.insert_depot(principal.tenant_id, data))

    async def depots(self, principal: Principal) -> list[Depot]:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await SetupRepository(conn).depots(principal.tenant_id)

    async def depot(self, principal: Principal, depot_id: UUID) -> Depot:
        return await self._get(principal, "depot", lambda r: r.depot(principal.tenant_id, depot_id))

    async def delete_depot(self, principal: Principal, depot_id: UUID) -> None:
        async def in_use(repo: SetupRepository) -> str | None:
            names = await repo.depot_in_use(principal.tenant_id, depot_id)
            return f"depot {depot_id} is the base of vehicles {', '.join(names)}" if names else None
        await self._delete(principal, "depot", "collection_depots", depot_id,
                           lambda r: r.depot(principal.tenant_id, depot_id), in_use)

    # -- disposal sites
    async def create_site(self, principal: Principal, data: DisposalSiteCreate) -> DisposalSite:
        data = msgspec.structs.replace(data, name=_named(data.name, "disposal site"))
        return await self._create(principal, "disposal_site", lambda r: r.insert_site(principal.tenant_id, data))

    async def sites(self, principal: Principal) -> list[DisposalSite]:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await SetupRepository(conn).sites(principal.tenant_id)

    async def site(self, principal: Principal, site_id: UUID) -> DisposalSite:
        return await self._get(principal, "disposal_site", lambda r: r.site(principal.tenant_id, site_id))

    async def delete_site(self, principal: Principal, site_id: UUID) -> None:
        await self._delete(principal, "disposal_site", "collection_disposal_sites", site_id,
                           lambda r: r.site(principal.tenant_id, site_id))

    # -- vehicles
    async def create_vehicle(self, principal: Principal, data: VehicleCreate) -> Vehicle:
        data = msgspec.structs.replace(data, name=_named(data.name, "vehicle"))
        data = msgspec.structs.replace(data, shift_start=clock(data.shift_start), shift_end=clock(data.shift_end))
        if data.shift_end == data.shift_start:
            # One that ends before it starts is a night round, ending the next morning.
            raise _invalid("vehicle", "shift_end", "must differ from shift_start")

        async def insert(repo: SetupRepository) -> Vehicle:
            if await repo.depot(principal.tenant_id, data.depot_id) is None:
                raise _invalid("vehicle", "depot_id", f"no depot {data.depot_id} in this city")
            return await repo.insert_vehicle(principal.tenant_id, data)
        return await self._create(principal, "vehicle", insert)

    async def vehicles(self, principal: Principal) -> list[Vehicle]:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await SetupRepository(conn).vehicles(principal.tenant_id)

    async def vehicle(self, principal: Principal, vehicle_id: UUID) -> Vehicle:
        return await self._get(principal, "vehicle", lambda r: r.vehicle(principal.tenant_id, vehicle_id))

    async def delete_vehicle(self, principal: Principal, vehicle_id: UUID) -> None:
        # A vehicle that drove (or will drive) a route stays: the routes name it.
        async def in_use(repo: SetupRepository) -> str | None:
            routes = await repo.vehicle_routes(principal.tenant_id, vehicle_id)
            return f"vehicle {vehicle_id} has {routes} route(s) in plans" if routes else None
        await self._delete(principal, "vehicle", "collection_vehicles", vehicle_id,
                           lambda r: r.vehicle(principal.tenant_id, vehicle_id), in_use)

    # -- time windows
    async def create_window(self, principal: Principal, data: TimeWindowCreate) -> TimeWindow:
        data = msgspec.structs.replace(data, starts=clock(data.starts), ends=clock(data.ends))
        if data.ends <= data.starts:
            raise _invalid("time window", "ends", "must be after starts")
        if any(not 1 <= d <= 7 for d in data.weekdays):
            raise _invalid("time window", "weekdays", "ISO weekdays are 1 (Monday) to 7 (Sunday)")
        if (data.center is None) != (data.radius_m is None):
            raise _invalid("time window", "radius_m", "center and radius_m go together")
        async def insert(repo: SetupRepository) -> TimeWindow:
            await DeviceRepository(repo.conn).require_known_district(principal.tenant_id, data.district)
            return await repo.insert_window(principal.tenant_id, data)
        return await self._create(principal, "time_window", insert)

    async def windows(self, principal: Principal) -> list[TimeWindow]:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await SetupRepository(conn).windows(principal.tenant_id)

    async def window(self, principal: Principal, window_id: UUID) -> TimeWindow:
        return await self._get(principal, "time_window", lambda r: r.window(principal.tenant_id, window_id))

    async def delete_window(self, principal: Principal, window_id: UUID) -> None:
        await self._delete(principal, "time_window", "collection_time_windows", window_id,
                           lambda r: r.window(principal.tenant_id, window_id))

    # -- settings
    async def settings(self, principal: Principal) -> CollectionSettings:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await SetupRepository(conn).settings(principal.tenant_id)

    async def update_settings(self, principal: Principal, data: SettingsUpdate) -> CollectionSettings:
        require(principal, Permission.PLAN_WORK)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = SetupRepository(conn)
            before = await repo.settings(principal.tenant_id, for_update=True)
            changes = {f: getattr(data, f) for f in data.__struct_fields__ if getattr(data, f) is not UNSET}
            if changes.get("plan_at") is not None:
                changes["plan_at"] = clock(changes["plan_at"])
            after = msgspec.structs.replace(before, **changes)
            if after != before:
                await repo.save_settings(principal.tenant_id, after)
                await record(conn, principal, "collection.settings.update", "collection_settings",
                             principal.tenant_id, before, after)
        return after
