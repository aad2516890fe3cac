"""/api/v1/collection: a city's collection set-up (depots, disposal sites, vehicles, time windows,
settings) and its pickup plans."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Controller, Response, delete, get, patch, post
from litestar.params import Parameter
from msgspec import Meta, Struct

from api.openapi import PlanOperation
from api.problems import problems
from fleet.access.models import Principal
from fleet.collection import models as m
from fleet.collection.plans_service import PlanService
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


class Settings(Struct):
    threshold_percent: float
    service_s: int
    unload_s: int
    road_factor: float
    speed_kmh: float
    plan_at: Annotated[str | None, Meta(description="local time, HH:MM; null: never")]
    time_limit_s: int
    round_days: int


def settings_out(s: m.CollectionSettings) -> Settings:
    return Settings(s.threshold_percent, s.service_s, s.unload_s, s.road_factor, s.speed_kmh,
                    hhmm(s.plan_at) if s.plan_at is not None else None, s.time_limit_s, s.round_days)


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
                           collection_service: CollectionService) -> Settings:
        return settings_out(await collection_service.settings(principal))

    @patch("/settings", summary="Change some of the city's collection settings", responses=problems(403, 422))
    async def update_settings(self, data: m.SettingsUpdate, principal: Principal,
                              collection_service: CollectionService) -> Settings:
        return settings_out(await collection_service.update_settings(principal, data))


class Stop(Struct):
    id: UUID
    seq: int
    kind: str
    device_id: UUID | None
    disposal_site_id: UUID | None
    location: m.Location
    arrival: datetime
    load_after: int
    expected_fill: float | None
    required: bool
    status: str
    skip_reason: str | None


class Route(Struct):
    id: UUID
    vehicle_id: UUID
    vehicle_number: int
    crew_id: UUID | None
    status: str
    starts_at: datetime
    ends_at: datetime
    distance_m: float
    duration_s: float
    stops: list[Stop]


class Unassigned(Struct):
    device_id: UUID
    reason: str
    detail: str | None


class Plan(Struct):
    id: UUID
    date: date
    waste_kind: str | None
    status: str
    source: str
    replaces_id: UUID | None
    time_limit_s: int
    error: str | None
    cost: float | None
    distance_m: float | None
    duration_s: float | None
    summary: dict[str, Any]
    created_at: datetime
    solved_at: datetime | None
    routes: list[Route]
    unassigned: list[Unassigned]


class Replan(Struct, forbid_unknown_fields=True):
    time_limit_s: Annotated[int, Meta(ge=1, le=m.MAX_TIME_LIMIT_S)] | None = None


def stop_out(s: m.Stop) -> Stop:
    return Stop(s.id, s.seq, s.kind, s.device_id, s.disposal_site_id, m.Location(s.lat, s.lon), s.arrival,
                s.load_after, s.expected_fill, s.required, s.status, s.skip_reason)


def plan_out(p: m.Plan) -> Plan:
    return Plan(p.id, p.date, p.waste_kind, p.status, p.source, p.replaces_id, p.time_limit_s, p.error, p.cost,
                p.distance_m, p.duration_s, p.summary, p.created_at, p.solved_at,
                [Route(r.id, r.vehicle_id, r.vehicle_number, r.crew_id, r.status, r.starts_at, r.ends_at,
                       r.distance_m, r.duration_s, [stop_out(s) for s in r.stops]) for r in p.routes],
                [Unassigned(u.device_id, u.reason, u.detail) for u in p.unassigned])


class PlanController(Controller):
    path = "/api/v1/collection/plans"
    tags = ["waste collection"]

    @post("/", summary="Build and solve the pickup plan for a date (waits for the solve, at most time_limit_s)",
          description="Must-collect bins (they pass the threshold before the end of the day after, or have an "
                      "overflow or fire alarm), may-collect bins as optional visits with a prize; bins left out are "
                      "listed in `unassigned` with the reason. Default time limit: the city's `time_limit_s`.",
          responses=problems(403, 422))
    async def create_plan(self, data: m.PlanRequest, principal: Principal, plan_service: PlanService) -> Plan:
        return plan_out(await plan_service.create(principal, data))

    @get("/", summary="The city's plans, newest first, of one date or all", responses=problems(403))
    async def list_plans(self, principal: Principal, plan_service: PlanService,
                         date: Annotated[date | None, Parameter(query="date", required=False)] = None,  # noqa: A002
                         limit: Annotated[int, Parameter(ge=1, le=1000)] = 100) -> list[Plan]:
        return [plan_out(p) for p in await plan_service.list(principal, date, limit)]

    @get("/{plan_id:uuid}", summary="One plan: JSON, or GeoJSON for maps, or CSV for print",
         responses=problems(403, 404), operation_class=PlanOperation)
    async def get_plan(self, plan_id: UUID, principal: Principal, plan_service: PlanService,
                       format: Literal["json", "geojson", "csv"] = "json",  # noqa: A002 - the query parameter's name
                       ) -> Response[Plan]:
        if format == "geojson":
            return Response(await plan_service.geojson(principal, plan_id), media_type="application/geo+json")
        if format == "csv":
            return Response(await plan_service.csv(principal, plan_id), media_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="plan-{plan_id}.csv"'})
        return Response(plan_out(await plan_service.get(principal, plan_id)))

    @post("/{plan_id:uuid}/replan", summary="Re-plan mid-shift: remaining stops and new urgent bins; done stops stay",
          description="A new plan (source `replan`, `replaces_id`) replaces this one, which becomes `superseded`. "
                      "Each truck starts from its last done stop at the current time with its load; crews carry over. "
                      "The old plan's routes under way become `cancelled` and refuse marks (409 `replaced_by`). "
                      "409 also when another re-plan of the same plan was stored first.",
          responses=problems(403, 404, 409, 422))
    async def replan(self, plan_id: UUID, principal: Principal, plan_service: PlanService,
                     data: Replan | None = None) -> Plan:
        return plan_out(await plan_service.replan(principal, plan_id,
                                                  time_limit_s=data.time_limit_s if data else None))
