"""SQL for a city's collection set-up: settings, depots, disposal sites, vehicles, time windows."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from fleet.collection.models import (CollectionSettings, Depot, DepotCreate, DisposalSite, DisposalSiteCreate,
                                     TimeWindow, TimeWindowCreate, Vehicle, VehicleCreate)

_SETTINGS = ("threshold_percent", "service_s", "unload_s", "road_factor", "speed_kmh", "plan_at",
             "time_limit_s", "round_days")


def _depot(row: asyncpg.Record) -> Depot:
    return Depot(row["id"], row["name"], row["lat"], row["lon"], row["created_at"])


def _site(row: asyncpg.Record) -> DisposalSite:
    return DisposalSite(row["id"], row["name"], row["lat"], row["lon"], tuple(row["waste_kinds"]),
                        row["created_at"])


def _vehicle(row: asyncpg.Record) -> Vehicle:
    return Vehicle(row["id"], row["name"], row["waste_kind"], row["capacity_litres"], row["count"],
                   row["depot_id"], row["shift_start"], row["shift_end"], row["cost_per_km"],
                   row["cost_per_hour"], row["created_at"])


def _window(row: asyncpg.Record) -> TimeWindow:
    return TimeWindow(row["id"], row["name"], row["starts"], row["ends"], tuple(row["weekdays"]),
                      row["district"], row["lat"], row["lon"], row["radius_m"], tuple(row["device_ids"]),
                      row["created_at"])


class SetupRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # -- settings: the row is written on first change; until then the defaults apply
    async def settings(self, tenant_id: UUID, *, for_update: bool = False) -> CollectionSettings:
        row = await self.conn.fetchrow(
            f"select * from collection_settings where tenant_id = $1{' for update' if for_update else ''}",
            tenant_id)
        if row is None:
            return CollectionSettings()
        return CollectionSettings(**{name: row[name] for name in _SETTINGS})

    async def save_settings(self, tenant_id: UUID, settings: CollectionSettings) -> None:
        values = [getattr(settings, name) for name in _SETTINGS]
        await self.conn.execute(
            f"""insert into collection_settings (tenant_id, {', '.join(_SETTINGS)})
                values ($1, {', '.join(f'${i + 2}' for i in range(len(_SETTINGS)))})
                on conflict (tenant_id) do update set
                {', '.join(f'{n} = excluded.{n}' for n in _SETTINGS)}, updated_at = now()""",
            tenant_id, *values)

    # -- depots
    async def insert_depot(self, tenant_id: UUID, data: DepotCreate) -> Depot:
        return _depot(await self.conn.fetchrow(
            "insert into collection_depots (tenant_id, name, lat, lon) values ($1, $2, $3, $4) returning *",
            tenant_id, data.name, data.location.lat, data.location.lon))

    async def depots(self, tenant_id: UUID) -> list[Depot]:
        return [_depot(r) for r in await self.conn.fetch(
            "select * from collection_depots where tenant_id = $1 order by name, id", tenant_id)]

    async def depot(self, tenant_id: UUID, depot_id: UUID) -> Depot | None:
        row = await self.conn.fetchrow(
            "select * from collection_depots where tenant_id = $1 and id = $2", tenant_id, depot_id)
        return _depot(row) if row else None

    async def depot_in_use(self, tenant_id: UUID, depot_id: UUID) -> list[str]:
        return [r["name"] for r in await self.conn.fetch(
            "select name from collection_vehicles where tenant_id = $1 and depot_id = $2 order by name",
            tenant_id, depot_id)]

    # -- disposal sites
    async def insert_site(self, tenant_id: UUID, data: DisposalSiteCreate) -> DisposalSite:
        return _site(await self.conn.fetchrow(
            """insert into collection_disposal_sites (tenant_id, name, lat, lon, waste_kinds)
               values ($1, $2, $3, $4, $5) returning *""",
            tenant_id, data.name, data.location.lat, data.location.lon, sorted({str(k) for k in data.waste_kinds})))

    async def sites(self, tenant_id: UUID) -> list[DisposalSite]:
        return [_site(r) for r in await self.conn.fetch(
            "select * from collection_disposal_sites where tenant_id = $1 order by name, id", tenant_id)]

    async def site(self, tenant_id: UUID, site_id: UUID) -> DisposalSite | None:
        row = await self.conn.fetchrow(
            "select * from collection_disposal_sites where tenant_id = $1 and id = $2", tenant_id, site_id)
        return _site(row) if row else None

    # -- vehicles
    async def insert_vehicle(self, tenant_id: UUID, data: VehicleCreate) -> Vehicle:
        return _vehicle(await self.conn.fetchrow(
            """insert into collection_vehicles (tenant_id, name, waste_kind, capacity_litres, count, depot_id,
                                                shift_start, shift_end, cost_per_km, cost_per_hour)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning *""",
            tenant_id, data.name, str(data.waste_kind), data.capacity_litres, data.count, data.depot_id,
            data.shift_start, data.shift_end, data.cost_per_km, data.cost_per_hour))

    async def vehicles(self, tenant_id: UUID, waste_kind: str | None = None) -> list[Vehicle]:
        return [_vehicle(r) for r in await self.conn.fetch(
            """select * from collection_vehicles where tenant_id = $1 and ($2::text is null or waste_kind = $2)
               order by name, id""", tenant_id, waste_kind)]

    async def vehicle(self, tenant_id: UUID, vehicle_id: UUID) -> Vehicle | None:
        row = await self.conn.fetchrow(
            "select * from collection_vehicles where tenant_id = $1 and id = $2", tenant_id, vehicle_id)
        return _vehicle(row) if row else None

    async def vehicle_routes(self, tenant_id: UUID, vehicle_id: UUID) -> int:
        return await self.conn.fetchval(
            "select count(*) from collection_routes where tenant_id = $1 and vehicle_id = $2", tenant_id, vehicle_id)

    # -- time windows
    async def insert_window(self, tenant_id: UUID, data: TimeWindowCreate) -> TimeWindow:
        center = data.center
        return _window(await self.conn.fetchrow(
            """insert into collection_time_windows (tenant_id, name, starts, ends, weekdays, district, lat, lon,
                                                    radius_m, device_ids)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning *""",
            tenant_id, data.name, data.starts, data.ends, sorted(set(data.weekdays)), data.district,
            center.lat if center else None, center.lon if center else None, data.radius_m, list(data.device_ids)))

    async def windows(self, tenant_id: UUID) -> list[TimeWindow]:
        return [_window(r) for r in await self.conn.fetch(
            "select * from collection_time_windows where tenant_id = $1 order by starts, name, id", tenant_id)]

    async def window(self, tenant_id: UUID, window_id: UUID) -> TimeWindow | None:
        row = await self.conn.fetchrow(
            "select * from collection_time_windows where tenant_id = $1 and id = $2", tenant_id, window_id)
        return _window(row) if row else None

    async def delete(self, table: str, tenant_id: UUID, entity_id: UUID) -> None:
        assert table in {"collection_depots", "collection_disposal_sites", "collection_vehicles",
                         "collection_time_windows"}
        await self.conn.execute(f"delete from {table} where tenant_id = $1 and id = $2", tenant_id, entity_id)
