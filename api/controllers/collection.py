"""/api/v1/collection: a city's collection set-up (depots, disposal sites, vehicles, time windows,
settings) and its pickup plans."""

from __future__ import annotations

from datetime import datetime, time
from uuid import UUID

from litestar import Controller, delete, get, patch, post
from msgspec import Struct

from api.problems import problems
from fleet.access.models import Principal
from fleet.collection import models as m
from fleet.collection.service import CollectionService


class Depot(Struct):
    id: UUID
    name: str
    location: m.Location
    created_at: datetime


class DisposalSite(Struct):
    id: UUID
    name: str
    location: m.Location
    waste_kinds: list[str]
    created_at: datetime


class Vehicle(Struct):
    id: UUID
    name: str
    waste_kind: str
    capacity_litres: int
    count: int
    depot_id: UUID
    shift_start: str
    shift_end: str
    cost_per_km: float
    cost_per_hour: float
    created_at: datetime


class TimeWindow(Struct):
    id: UUID
    name: str
    starts: str
    ends: str
    weekdays: list[int]
    district: str | None
    center: m.Location | None
    radius_m: float | None
    device_ids: list[UUID]
    created_at: datetime


def hhmm(t: time) -> str:
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


def depot_out(d: m.Depot) -> Depot:
    return Depot(d.id, d.name, m.Location(d.lat, d.lon), d.created_at)


def site_out(s: m.DisposalSite) -> DisposalSite:
    return DisposalSite(s.id, s.name, m.Location(s.lat, s.lon), list(s.waste_kinds), s.created_at)


def vehicle_out(v: m.Vehicle) -> Vehicle:
    return Vehicle(v.id, v.name, v.waste_kind, v.capacity_litres, v.count, v.depot_id, hhmm(v.shift_start),
                   hhmm(v.shift_end), v.cost_per_km, v.cost_per_hour, v.created_at)


def window_out(w: m.TimeWindow) -> TimeWindow:
    center = m.Location(w.lat, w.lon) if w.lat is not None and w.lon is not None else None
    return TimeWindow(w.id, w.name, hhmm(w.starts), hhmm(w.ends), list(w.weekdays), w.district, center, w.radius_m,
                      list(w.device_ids), w.created_at)


class CollectionSetupController(Controller):
    path = "/api/v1/collection"
    tags = ["waste collection"]

    @post("/depots", summary="Add a depot, where trucks start and end their shift", responses=problems(403, 409, 422))
    async def create_depot(self, data: m.DepotCreate, principal: Principal,
                           collection_service: CollectionService) -> Depot:
        return depot_out(await collection_service.create_depot(principal, data))

    @get("/depots", summary="The city's depots by name", responses=problems(403))
    async def list_depots(self, principal: Principal, collection_service: CollectionService) -> list[Depot]:
        return [depot_out(d) for d in await collection_service.depots(principal)]

    @get("/depots/{depot_id:uuid}", summary="One depot", responses=problems(403, 404))
    async def get_depot(self, depot_id: UUID, principal: Principal, collection_service: CollectionService) -> Depot:
        return depot_out(await collection_service.depot(principal, depot_id))

    @delete("/depots/{depot_id:uuid}", summary="Remove a depot no vehicle is based at",
            responses=problems(403, 404, 409))
    async def delete_depot(self, depot_id: UUID, principal: Principal,
                           collection_service: CollectionService) -> None:
        await collection_service.delete_depot(principal, depot_id)

    @post("/disposal-sites", summary="Add a disposal site, where a full truck unloads mid-shift",
          responses=problems(403, 409, 422))
    async def create_site(self, data: m.DisposalSiteCreate, principal: Principal,
                          collection_service: CollectionService) -> DisposalSite:
        return site_out(await collection_service.create_site(principal, data))

    @get("/disposal-sites", summary="The city's disposal sites by name", responses=problems(403))
    async def list_sites(self, principal: Principal, collection_service: CollectionService) -> list[DisposalSite]:
        return [site_out(s) for s in await collection_service.sites(principal)]

    @get("/disposal-sites/{site_id:uuid}", summary="One disposal site", responses=problems(403, 404))
    async def get_site(self, site_id: UUID, principal: Principal,
                       collection_service: CollectionService) -> DisposalSite:
        return site_out(await collection_service.site(principal, site_id))

    @delete("/disposal-sites/{site_id:uuid}", summary="Remove a disposal site no plan unloads at",
            responses=problems(403, 404, 409))
    async def delete_site(self, site_id: UUID, principal: Principal,
                          collection_service: CollectionService) -> None:
        await collection_service.delete_site(principal, site_id)

    @post("/vehicles", summary="Add `count` alike trucks for a waste kind, based at a depot of the city",
          responses=problems(403, 409, 422))
    async def create_vehicle(self, data: m.VehicleCreate, principal: Principal,
                             collection_service: CollectionService) -> Vehicle:
        return vehicle_out(await collection_service.create_vehicle(principal, data))

    @get("/vehicles", summary="The city's vehicles by name", responses=problems(403))
    async def list_vehicles(self, principal: Principal, collection_service: CollectionService) -> list[Vehicle]:
        return [vehicle_out(v) for v in await collection_service.vehicles(principal)]

    @get("/vehicles/{vehicle_id:uuid}", summary="One vehicle", responses=problems(403, 404))
    async def get_vehicle(self, vehicle_id: UUID, principal: Principal,
                          collection_service: CollectionService) -> Vehicle:
        return vehicle_out(await collection_service.vehicle(principal, vehicle_id))

    @delete("/vehicles/{vehicle_id:uuid}", summary="Remove a vehicle no plan's route uses",
            responses=problems(403, 404, 409))
    async def delete_vehicle(self, vehicle_id: UUID, principal: Principal,
                             collection_service: CollectionService) -> None:
        await collection_service.delete_vehicle(principal, vehicle_id)

    @post("/time-windows", summary="Times bins must not be collected (local time), for a district, an area, "
                                   "listed bins or every bin", responses=problems(403, 422))
    async def create_window(self, data: m.TimeWindowCreate, principal: Principal,
                            collection_service: CollectionService) -> TimeWindow:
        return window_out(await collection_service.create_window(principal, data))

    @get("/time-windows", summary="The city's time windows", responses=problems(403))
    async def list_windows(self, principal: Principal, collection_service: CollectionService) -> list[TimeWindow]:
        return [window_out(w) for w in await collection_service.windows(principal)]

    @get("/time-windows/{window_id:uuid}", summary="One time window", responses=problems(403, 404))
    async def get_window(self, window_id: UUID, principal: Principal,
                         collection_service: CollectionService) -> TimeWindow:
        return window_out(await collection_service.window(principal, window_id))

    @delete("/time-windows/{window_id:uuid}", summary="Remove a time window", responses=problems(403, 404))
    async def delete_window(self, window_id: UUID, principal: Principal,
                            collection_service: CollectionService) -> None:
        await collection_service.delete_window(principal, window_id)

    @get("/settings", summary="The city's collection settings", responses=problems(403))
    async def get_settings(self, principal: Principal,
                           collection_service: CollectionService) -> m.CollectionSettings:
        return await collection_service.settings(principal)

    @patch("/settings", summary="Change some of the city's collection settings", responses=problems(403, 422))
    async def update_settings(self, data: m.SettingsUpdate, principal: Principal,
                              collection_service: CollectionService) -> m.CollectionSettings:
        return await collection_service.update_settings(principal, data)
