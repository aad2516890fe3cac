"""What the scheduler's leader does for waste collection by itself: completes a stop when its
bin's own fill drop says it was emptied, and builds each city's plan for tomorrow in the evening.

Any node may lead, one at a time (fleet.scheduling.leader): a stop is marked once (its route's
row is locked and the stop must still be planned), and the evening's plan is one per city and
date whatever happens, because `collection_plans_scheduled_once` admits one scheduled plan per
city, date and waste kind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from itertools import groupby
from typing import Protocol
from uuid import UUID

import asyncpg
import structlog

from fleet.collection.automation_repository import AutomationRepository
from fleet.collection.driving import UNDER_WAY, mark_in
from fleet.collection.driving_repository import DrivingRepository
from fleet.collection.models import (Plan, PlanRequest, PlanSource, PlanStatus, RouteStatus, StopStatus,
                                     StopUpdate)
from fleet.db import Database
from fleet.errors import Conflict
from fleet.events.models import PLAN_SCHEDULED
from fleet.events.service import publish
from fleet.workorders.changes import system_actor

log = structlog.get_logger(__name__)

Fence = Callable[[asyncpg.Connection], Awaitable[None]]

# A bin counts as emptied once it reads at most LOW_MARK percent (and, when its reading before
# the route started is known, at least MIN_DROP under it), or DROP_MARGIN points under that
# reading: sensor noise moves a reading by a few points, an emptying by tens.
LOW_MARK = 15.0
MIN_DROP = 10.0
DROP_MARGIN = 40.0
# Routes that started within this long are looked at (a shift, with room to spare).
ROUTE_LOOKBACK = timedelta(hours=24)
BATCH = 500
# A failed evening plan is tried again after this long; one still `solving` after this long was
# abandoned by a node that died mid-solve.
RETRY_FAILED_AFTER = timedelta(minutes=5)
ABANDONED_AFTER = timedelta(minutes=30)


class BuildPlan(Protocol):
    """fleet.collection.planning.build_plan."""

    async def __call__(self, db: Database, tenant_id: UUID, request: PlanRequest, *, source: PlanSource,
                       created_by: UUID | None = None, replaces: UUID | None = None,
                       routing_url: str | None = None) -> Plan: ...


async def complete_by_fill(db: Database, now: datetime, *, fence: Fence | None = None) -> int:
    """One pass over every city: marks done (source `fill`) each planned stop of a route under
    way whose bin emptied since the route started; returns how many."""
    async with db.system_tx() as conn:
        found = await DrivingRepository(conn).emptied_by_fill(now, LOW_MARK, MIN_DROP, DROP_MARGIN,
                                                              now - ROUTE_LOOKBACK, BATCH)
    completed = 0
    for (tenant_id, route_id), stops in groupby(found, key=lambda r: (r["tenant_id"], r["route_id"])):
        async with db.system_tx() as conn:
            if fence is not None:
                await fence(conn)
            repo = DrivingRepository(conn)
            for emptied in stops:
                route = await repo.lock_route(tenant_id, route_id)
                stop = await repo.stop(tenant_id, route_id, emptied["stop_id"])
                if route is None or RouteStatus(route["status"]) not in UNDER_WAY or stop is None \
                        or stop["status"] != StopStatus.PLANNED or route["plan_status"] != PlanStatus.READY:
                    continue  # a crew marked it, the route ended or was re-planned, since the read above
                await mark_in(conn, system_actor(tenant_id), route, stop, StopUpdate(StopStatus.DONE), now,
                              source="fill", emptied=(emptied["emptied_at"], emptied["fill_before"],
                                                      emptied["fill_after"]))
                completed += 1
    if completed:
        log.info("stops completed by their bins' fill drop", count=completed)
    return completed


async def plan_evenings(db: Database, build: BuildPlan, now: datetime, *, fence: Fence | None = None,
                        routing_url: str | None = None) -> list[UUID]:
    """Builds tomorrow's plan for every city whose local time passed its `plan_at` and that has
    none yet (or only a failed one, tried again); returns the plans built."""
    async with db.system_tx() as conn:
        due = await AutomationRepository(conn).evenings_due(now, now - RETRY_FAILED_AFTER, now - ABANDONED_AFTER)
    built = []
    for city in due:
        tenant_id, day = city["tenant_id"], city["day"]
        async with db.system_tx() as conn:
            if fence is not None:
                await fence(conn)
            if city["plan_id"] is not None:
                # The failed (or abandoned) try makes room for this one: still one plan per date.
                await AutomationRepository(conn).drop_plan(tenant_id, city["plan_id"])
        try:
            plan = await build(db, tenant_id, PlanRequest(date=day), source=PlanSource.SCHEDULE,
                               routing_url=routing_url)
        except (asyncpg.UniqueViolationError, Conflict):
            # The unique index kept a second plan for the date out: another node's pass built it.
            log.info("evening plan already built elsewhere", tenant=str(tenant_id), date=day.isoformat())
            continue
        except Exception as exc:  # noqa: BLE001 - recorded as the failed plan; the next pass retries
            log.exception("evening plan failed", tenant=str(tenant_id), date=day.isoformat())
            async with db.system_tx() as conn:
                plan_id = await AutomationRepository(conn).record_failure(
                    tenant_id, day, city["time_limit_s"], f"{type(exc).__name__}: {exc}"[:2000], now)
                if plan_id is not None:
                    await publish(conn, tenant_id, PLAN_SCHEDULED, "plan", plan_id, {
                        "plan_id": str(plan_id), "date": day.isoformat(), "status": "failed",
                        "error": f"{type(exc).__name__}: {exc}"[:2000]})
            continue
        if plan.status == PlanStatus.SOLVING:
            # The planner answered another node's plan for the date, still being solved: that
            # node tells of it.
            log.info("evening plan already being built elsewhere", tenant=str(tenant_id), date=day.isoformat())
            continue
        async with db.system_tx() as conn:
            await publish(conn, tenant_id, PLAN_SCHEDULED, "plan", plan.id, {
                "plan_id": str(plan.id), "date": day.isoformat(), "status": plan.status, "error": plan.error,
                "routes": len(plan.routes), "unassigned": len(plan.unassigned)})
        log.info("evening plan built", tenant=str(tenant_id), date=day.isoformat(), plan=str(plan.id),
                 status=plan.status, routes=len(plan.routes), unassigned=len(plan.unassigned))
        built.append(plan.id)
    return built
