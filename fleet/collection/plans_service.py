"""Pickup plans as use cases: build one for a date, re-plan it mid-shift, read and export them."""

from __future__ import annotations

from datetime import date
from uuid import UUID

from fleet.access.models import Permission, Principal
from fleet.audit.service import record
from fleet.collection import exports
from fleet.collection.models import Plan, PlanRequest, PlanSource
from fleet.collection.planning import build_plan
from fleet.collection.plans_repository import PlanRepository
from fleet.collection.replanning import replan
from fleet.collection.repository import SetupRepository
from fleet.db import Database
from fleet.errors import NotFound
from fleet.registry.service import require


def _audited(plan: Plan) -> dict:
    return {"date": plan.date.isoformat(), "waste_kind": plan.waste_kind, "status": plan.status,
            "source": plan.source, "replaces_id": str(plan.replaces_id) if plan.replaces_id else None,
            "routes": len(plan.routes), "unassigned": len(plan.unassigned), "summary": plan.summary}


class PlanService:
    def __init__(self, db: Database, *, routing_url: str | None = None) -> None:
        self.db = db
        self.routing_url = routing_url

    async def create(self, principal: Principal, request: PlanRequest) -> Plan:
        """Solved before it returns (within the time limit, at most 600 s)."""
        require(principal, Permission.PLAN_WORK)
        plan = await build_plan(self.db, principal.tenant_id, request, source=PlanSource.API,
                                created_by=principal.api_key_id, routing_url=self.routing_url)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            await record(conn, principal, "collection.plan.create", "collection_plan", plan.id, None, _audited(plan))
        return plan

    async def replan(self, principal: Principal, plan_id: UUID, *, time_limit_s: int | None = None) -> Plan:
        require(principal, Permission.PLAN_WORK)
        plan = await replan(self.db, principal.tenant_id, plan_id, created_by=principal.api_key_id,
                            time_limit_s=time_limit_s, routing_url=self.routing_url)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            await record(conn, principal, "collection.plan.replan", "collection_plan", plan.id,
                         {"plan_id": str(plan_id)}, _audited(plan))
        return plan

    async def get(self, principal: Principal, plan_id: UUID) -> Plan:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            plan = await PlanRepository(conn).plan(principal.tenant_id, plan_id)
        if plan is None:
            raise NotFound(f"plan {plan_id} not found")
        return plan

    async def list(self, principal: Principal, day: date | None, limit: int = 100) -> list[Plan]:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await PlanRepository(conn).plans(principal.tenant_id, day, limit)

    async def geojson(self, principal: Principal, plan_id: UUID) -> bytes:
        plan = await self.get(principal, plan_id)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            setup = SetupRepository(conn)
            depots = {d.id: (d.lat, d.lon) for d in await setup.depots(principal.tenant_id)}
            vehicles = {v.id: depots.get(v.depot_id) for v in await setup.vehicles(principal.tenant_id)}
        return exports.geojson(plan, {k: v for k, v in vehicles.items() if v is not None})

    async def csv(self, principal: Principal, plan_id: UUID) -> str:
        return exports.csv_text(await self.get(principal, plan_id))
