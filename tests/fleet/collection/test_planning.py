"""build_plan as the scheduler's evening job calls it: one plan per city, date and kind, whichever
node asks first, and a city's plan never sees another city's set-up."""

from __future__ import annotations

import asyncio
from datetime import date

from fleet.collection.models import DepotCreate, Location, PlanRequest, PlanSource, VehicleCreate
from fleet.collection.planning import build_plan
from fleet.collection.service import CollectionService
from tests.conftest import make_city


async def test_the_evening_plan_is_built_once_per_city_and_date(db):
    seoul, busan = await make_city(db, "seoul"), await make_city(db, "busan")
    setup = CollectionService(db)
    depot = await setup.create_depot(seoul.principal, DepotCreate("Depot", Location(37.5, 127.0)))
    await setup.create_vehicle(seoul.principal, VehicleCreate("Truck", "inorganic", 8000, depot.id, "06:00", "14:00"))
    request = PlanRequest(date(2026, 12, 8))
    first, second = await asyncio.gather(
        build_plan(db, seoul.tenant_id, request, source=PlanSource.SCHEDULE),
        build_plan(db, seoul.tenant_id, request, source=PlanSource.SCHEDULE))
    # One plan: the call that built it answers it ready; the other may have found it still solving.
    assert first.id == second.id and first.source == "schedule"
    assert "ready" in (first.status, second.status), (first.status, second.status)
    # Asked for over REST the same day, it is another plan; another city's evening is its own.
    asked = await build_plan(db, seoul.tenant_id, request, source=PlanSource.API)
    theirs = await build_plan(db, busan.tenant_id, request, source=PlanSource.SCHEDULE)
    assert len({first.id, asked.id, theirs.id}) == 3
    assert theirs.routes == () and theirs.summary["fixed_round_stops"] == 0


async def test_the_control_room_hears_when_a_plan_is_ready_or_failed(db):
    from tests.fleet.collection.route_fixtures import add_bin

    seoul = await make_city(db, "seoul")
    setup = CollectionService(db)
    depot = await setup.create_depot(seoul.principal, DepotCreate("Depot", Location(37.5, 127.0)))
    await setup.create_vehicle(seoul.principal, VehicleCreate("Truck", "inorganic", 8000, depot.id, "06:00", "14:00"))
    ready = await build_plan(db, seoul.tenant_id, PlanRequest(date(2026, 12, 8)), source=PlanSource.API)
    async with db.tenant_tx(seoul.tenant_id) as conn:
        await add_bin(conn, seoul.tenant_id, "bin-1", 37.51, 127.01)
    # Nothing answers on the discard port: the road distances cannot be had, the plan fails.
    failed = await build_plan(db, seoul.tenant_id, PlanRequest(date(2026, 12, 9)), source=PlanSource.API,
                              routing_url="http://127.0.0.1:9")
    assert (ready.status, failed.status) == ("ready", "failed")
    async with db.tenant_tx(seoul.tenant_id) as conn:
        events = await conn.fetch(
            """select subject_id, payload->>'status' as status, payload->>'error' as error, payload->>'date' as date
               from events where kind = 'plan.updated' order by id""")
    assert [(e["subject_id"], e["status"]) for e in events] == [(str(ready.id), "ready"), (str(failed.id), "failed")]
    assert events[1]["error"] == failed.error and events[0]["date"] == "2026-12-08"
