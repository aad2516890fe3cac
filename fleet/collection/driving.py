"""The routes crews drive: assigning a route to a crew, the tablet's view of it, marking stops
done or skipped, and the progress the control room follows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from fleet.access.models import Permission, Principal, Role
from fleet.audit.service import record
from fleet.collection.driving_repository import DrivingRepository, route_from_row
from fleet.collection.forecast_repository import EMPTIED_PATH, STOP_ORIGIN, forget_emptying, record_emptying
from fleet.collection.models import (EmptyingSource, PlanStatus, RouteOut, RoutePage, RouteStatus, SkipReason,
                                     StopStatus, StopUpdate)
from fleet.commands.models import Operation
from fleet.commands.repository import CommandRepository
from fleet.db import Database
from fleet.errors import (Conflict, FieldError, NotFound, PermissionDenied, PreconditionFailed, Replaced,
                          ValidationFailed)
from fleet.events.models import ROUTE_STOP_UPDATED, ROUTE_UPDATED
from fleet.events.service import publish
from fleet.registry.service import require
from fleet.workorders.changes import create_in
from fleet.workorders.routing import haversine_m

EMPTIED_EXPIRES = timedelta(hours=12)
MAX_ROUTES = 1000
UNDER_WAY = (RouteStatus.ASSIGNED, RouteStatus.IN_PROGRESS)
CLOSED = (RouteStatus.COMPLETED, RouteStatus.CANCELLED)


def utc_now() -> datetime:
    return datetime.now(UTC)


def driven_km(depot: tuple[float, float] | None, stops: list[tuple[float, float]], factor: float,
              back_to_depot: bool) -> float:
    """Km along the stops done in the order they were done, from the depot (and back to it once
    the route is over), great-circle times the city's road factor: the tablets report only the
    crew's last position, not a track."""
    points = ([depot] if depot else []) + stops + ([depot] if depot and back_to_depot and stops else [])
    metres = sum(haversine_m(a, b) for a, b in zip(points, points[1:]))
    return round(metres * factor / 1000, 3)


async def route_out(conn: asyncpg.Connection, tenant_id: UUID, route_id: UUID, now: datetime, *,
                    with_stops: bool = True) -> RouteOut:
    repo = DrivingRepository(conn)
    row = await repo.route_row(tenant_id, route_id)
    if row is None:
        raise NotFound(f"route {route_id} not found")
    return route_from_row(row, now, await repo.stops(tenant_id, route_id) if with_stops else None)


async def routes_for_sync(conn: asyncpg.Connection, tenant_id: UUID, crew_id: UUID | None, now: datetime,
                          route_ids: Sequence[UUID] | None = None) -> list[RouteOut]:
    """Routes with their stops for the tablets' sync: those named, else those under way (a
    crew's own, or every crew's for the control room)."""
    if route_ids is None:
        route_ids = await DrivingRepository(conn).under_way(tenant_id, crew_id)
    return [await route_out(conn, tenant_id, route_id, now) for route_id in route_ids]


async def _changed(conn: asyncpg.Connection, principal: Principal, action: str, before: dict[str, Any] | None,
                   route_id: UUID, now: datetime, previous_crew_id: UUID | None = None) -> RouteOut:
    """Audit and publish a change to a route (its stops inside), and answer with the route. The
    event names the crew it was taken from, so that crew's tablet learns to drop it."""
    after = await route_out(conn, principal.tenant_id, route_id, now)
    await record(conn, principal, action, "collection_route", route_id, before, msgspec.to_builtins(after))
    await announce(conn, principal.tenant_id, after, previous_crew_id=previous_crew_id)
    return after


async def announce(conn: asyncpg.Connection, tenant_id: UUID, route: RouteOut, **extra: UUID | None) -> None:
    """route.updated with the route (no stops) and `extra` ids (previous_crew_id, replaced_by)."""
    payload = msgspec.to_builtins(msgspec.structs.replace(route, stops=None))
    payload.update({k: str(v) for k, v in extra.items() if v is not None})
    await publish(conn, tenant_id, ROUTE_UPDATED, "route", route.id, payload)
def _json_value(value):
    # ISO 8601 like every other time the API and its events carry (str() would give "… 05:20:31+00:00").
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if isinstance(value, UUID) else value


async def mark_in(conn: asyncpg.Connection, principal: Principal, route: asyncpg.Record, stop: asyncpg.Record,
                  update: StopUpdate, now: datetime, *, source: str = "crew",
                  emptied: tuple[datetime, float | None, float | None] | None = None) -> RouteOut | None:
    """Mark a stop of a locked route; None when it already is so (nothing changed).

    A stop is done once: done again (or skipped again for the same reason) changes nothing;
    done to skipped or back is a correction only the control room makes. A bin done records
    its emptying; by a crew, it also tells the bin (Execute /3435/0/9); a damaged bin opens one
    work order to repair it."""
    tenant_id, repo = principal.tenant_id, DrivingRepository(conn)
    if stop["status"] == update.status and stop["skip_reason"] == update.reason:
        return None
    if stop["status"] != StopStatus.PLANNED and not principal.can(Permission.PLAN_WORK):
        raise Conflict(f"the stop is already {stop['status']}; the control room corrects it")
    if RouteStatus(route["status"]) is RouteStatus.CANCELLED:
        raise Conflict("the route is cancelled")
    done = update.status == StopStatus.DONE
    work_order_id = None
    if update.reason == SkipReason.DAMAGED and stop["work_order_id"] is None and stop["device_id"] is not None:
        order = await create_in(conn, principal, type="clean_or_repair_bin", priority="medium",
                                device_ids=[stop["device_id"]], now=now,
                                notes=f"damaged, reported at its collection stop"
                                      f"{': ' + update.notes if update.notes else ''}")
        work_order_id = order.id if order else None
    await repo.update_stop(tenant_id, stop["id"], status=update.status,
                           skip_reason=update.reason if not done else None,
                           done_source=source if done else None, done_at=now if done else None,
                           done_by=principal.actor if done else None, notes=update.notes,
                           work_order_id=work_order_id)
    if stop["kind"] == "bin":
        if done:
            at, before, after = emptied or (now, await repo.fill_of(tenant_id, stop["device_id"]), None)
            kind = EmptyingSource.DROP if source == "fill" else EmptyingSource.STOP
            await record_emptying(conn, tenant_id, stop["device_id"], at, kind, stop_id=stop["id"],
                                  fill_before=before, fill_after=after)
            if source == "crew":
                await CommandRepository(conn).insert_batch(
                    tenant_id, Operation.EXECUTE, EMPTIED_PATH, None, {"device_ids": [str(stop["device_id"])]},
                    [stop["device_id"]], principal.api_key_id, STOP_ORIGIN, now + EMPTIED_EXPIRES)
        elif stop["status"] == StopStatus.DONE:
            await forget_emptying(conn, tenant_id, stop["id"])
    changes = await _progress_changes(repo, tenant_id, route, now)
    await repo.update_route(tenant_id, route["id"], changes)
    stop_after = await repo.stop(tenant_id, route["id"], stop["id"])
    await publish(conn, tenant_id, ROUTE_STOP_UPDATED, "route", route["id"],
                  {"route_id": str(route["id"]), "crew_id": str(route["crew_id"]) if route["crew_id"] else None,
                   "stop": {k: _json_value(v) for k, v in dict(stop_after).items() if k not in ("tenant_id",)}})
    return await _changed(conn, principal, "collection_route.stop", {"stop": str(stop["id"]),
                          "status": stop["status"]}, route["id"], now)


async def _progress_changes(repo: DrivingRepository, tenant_id: UUID, route: asyncpg.Record,
                            now: datetime) -> dict[str, Any]:
    """What the stops now say about the route: under way at the first stop marked, completed at
    the last; bins emptied and km driven so far."""
    counts = await repo.counts(tenant_id, route["id"])
    status = RouteStatus(route["status"])
    changes: dict[str, Any] = {"bins_emptied": counts["emptied"]}
    if status in (RouteStatus.PLANNED, RouteStatus.ASSIGNED):
        changes["status"], changes["started_at"] = RouteStatus.IN_PROGRESS.value, route["started_at"] or now
    if counts["left"] == 0 and status is not RouteStatus.COMPLETED:
        changes["status"], changes["finished_at"] = RouteStatus.COMPLETED.value, now
    finished = changes.get("status", status) == RouteStatus.COMPLETED
    depot, stops, factor = await repo.driven(tenant_id, route["id"])
    changes["actual_km"] = driven_km(depot, stops, factor, back_to_depot=finished)
    return changes


class RouteService:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.db = db
        self.clock = clock

    async def list(self, principal: Principal, *, day: date | None = None, plan_id: UUID | None = None,
                   crew_id: UUID | None = None, assigned_to: str | None = None,
                   statuses: Sequence[str] = (), limit: int = MAX_ROUTES) -> RoutePage:
        require(principal, Permission.READ)
        if assigned_to is not None:
            if principal.crew_id is None:
                raise ValidationFailed("this API key belongs to no crew", [FieldError(
                    "assigned_to", "only a crew key (fleet apikey create --role crew --crew NAME) has a crew")])
            crew_id = principal.crew_id
        unknown = [s for s in statuses if s not in RouteStatus.__members__.values()]
        if unknown:
            raise ValidationFailed("invalid status", [FieldError("status", f"unknown status {unknown[0]!r}")])
        now = self.clock()
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            rows = await DrivingRepository(conn).routes(principal.tenant_id, day=day, plan_id=plan_id,
                                                        crew_id=crew_id, statuses=statuses, limit=limit)
        return RoutePage([route_from_row(r, now) for r in rows])

    async def get(self, principal: Principal, route_id: UUID) -> RouteOut:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await route_out(conn, principal.tenant_id, route_id, self.clock())

    async def assign(self, principal: Principal, route_id: UUID, crew_id: UUID | None,
                     if_match: str | None = None) -> RouteOut:
        """Give the route to a crew (assigned), to another, or back to nobody (planned) before it starts."""
        require(principal, Permission.PLAN_WORK)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = DrivingRepository(conn)
            route = await self._locked(repo, principal, route_id, if_match)
            status = RouteStatus(route["status"])
            if status in CLOSED:
                raise Conflict(f"the route is {status.value}")
            if crew_id is not None and not await repo.crew_exists(principal.tenant_id, crew_id):
                raise ValidationFailed("invalid assignment", [FieldError("crew_id", "no such crew in this city")])
            if crew_id is None and status is RouteStatus.IN_PROGRESS:
                raise Conflict("the route is under way: give it to another crew instead")
            if crew_id == route["crew_id"]:
                return await route_out(conn, principal.tenant_id, route_id, self.clock())
            changes: dict[str, Any] = {"crew_id": crew_id}
            if status in (RouteStatus.PLANNED, RouteStatus.ASSIGNED):
                changes["status"] = (RouteStatus.ASSIGNED if crew_id else RouteStatus.PLANNED).value
            await repo.update_route(principal.tenant_id, route_id, changes)
            return await _changed(conn, principal, "collection_route.assign",
                                  {"crew_id": str(route["crew_id"]) if route["crew_id"] else None},
                                  route_id, self.clock(), previous_crew_id=route["crew_id"])

    async def start(self, principal: Principal, route_id: UUID, if_match: str | None = None) -> RouteOut:
        return await self._move(principal, route_id, if_match, RouteStatus.IN_PROGRESS)

    async def finish(self, principal: Principal, route_id: UUID, if_match: str | None = None) -> RouteOut:
        return await self._move(principal, route_id, if_match, RouteStatus.COMPLETED)

    async def _move(self, principal: Principal, route_id: UUID, if_match: str | None,
                    target: RouteStatus) -> RouteOut:
        require(principal, Permission.MANAGE_WORK_ORDERS)
        now = self.clock()
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = DrivingRepository(conn)
            route = await self._locked(repo, principal, route_id, if_match, crew_may=True)
            status = RouteStatus(route["status"])
            if status is target:
                return await route_out(conn, principal.tenant_id, route_id, now)
            allowed = UNDER_WAY if target is RouteStatus.COMPLETED else (RouteStatus.ASSIGNED,)
            if status not in allowed:
                raise Conflict(f"a route cannot go from {status.value} to {target.value}"
                               + (" (assign a crew first)" if status is RouteStatus.PLANNED else ""))
            changes: dict[str, Any] = {"status": target.value, "started_at": route["started_at"] or now}
            if target is RouteStatus.COMPLETED:
                changes["finished_at"] = now
                depot, stops, factor = await repo.driven(principal.tenant_id, route_id)
                changes["actual_km"] = driven_km(depot, stops, factor, back_to_depot=True)
            await repo.update_route(principal.tenant_id, route_id, changes)
            return await _changed(conn, principal, f"collection_route.{target.value}",
                                  {"status": status.value}, route_id, now)

    async def mark(self, principal: Principal, route_id: UUID, stop_id: UUID, update: StopUpdate,
                   if_match: str | None = None) -> RouteOut:
        require(principal, Permission.MANAGE_WORK_ORDERS)
        if (update.status == StopStatus.SKIPPED) != (update.reason is not None):
            raise ValidationFailed("invalid stop update", [FieldError(
                "reason", "a skipped stop needs a reason (blocked, not_found, damaged); a done one none")])
        if update.status == StopStatus.PLANNED and not principal.can(Permission.PLAN_WORK):
            raise PermissionDenied("only the control room puts a stop back to planned")
        now = self.clock()
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = DrivingRepository(conn)
            route = await self._locked(repo, principal, route_id, None, crew_may=True)
            stop = await repo.stop(principal.tenant_id, route_id, stop_id)
            if stop is None:
                raise NotFound(f"stop {stop_id} not found on route {route_id}")
            # The same mark again (a tablet's retry, its If-Match now stale) is answered as done.
            if not (stop["status"] == update.status and stop["skip_reason"] == update.reason):
                _check_version(route, if_match)
            changed = await mark_in(conn, principal, route, stop, update, now)
            return changed or await route_out(conn, principal.tenant_id, route_id, now)

    @staticmethod
    async def _locked(repo: DrivingRepository, principal: Principal, route_id: UUID, if_match: str | None,
                      *, crew_may: bool = False) -> asyncpg.Record:
        """The route, locked; a crew acts only on a route assigned to its crew, and nobody on a
        superseded plan's route (409 naming the route that replaces it)."""
        route = await repo.lock_route(principal.tenant_id, route_id)
        if route is None:
            raise NotFound(f"route {route_id} not found")
        if route["plan_status"] == PlanStatus.SUPERSEDED:
            # A re-plan copied this route's stops into a new route: a mark here would be lost.
            successor = await repo.successor(principal.tenant_id, route_id)
            raise Replaced(f"route {route_id} was re-planned: "
                           + (f"route {successor} replaces it" if successor else "no route replaces it"), successor)
        if principal.role is Role.CREW and (not crew_may or principal.crew_id is None
                                            or route["crew_id"] != principal.crew_id):
            raise PermissionDenied("this route is not assigned to your crew")
        _check_version(route, if_match)
        return route


def _check_version(route: asyncpg.Record, if_match: str | None) -> None:
    """If-Match is optional (a tablet's mark queued offline still lands); a stale one is refused."""
    text = (if_match or "*").strip().removeprefix("W/").strip('"')
    if text != "*" and (not text.isdigit() or int(text) != route["version"]):
        raise PreconditionFailed(f"the route is at version {route['version']}; fetch it and try again",
                                 route["version"])
