"""The leader's collection jobs against real PostgreSQL: a bin's own fill drop completes its stop
(once), and the evening's plan for tomorrow is built once per city and date, failures retried."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import asyncpg
import pytest

from fleet.collection.automation import complete_by_fill, plan_evenings
from fleet.collection.driving import RouteService
from fleet.collection.models import StopStatus, StopUpdate
from fleet.errors import Conflict
from fleet.db import Database
from fleet.workorders.changes import system_actor
from tests.conftest import make_city
from tests.fleet.collection.route_fixtures import add_vehicle, planner, replanned, seed_route

FILL = "/3435/0/2"


async def _readings(db: Database, tenant_id: UUID, device_id: UUID, readings: list[tuple[datetime, float]]) -> None:
    async with db.system_tx() as conn:
        await conn.executemany(
            "insert into telemetry (tenant_id, device_id, time, path, v_num) values ($1, $2, $3, $4, $5)",
            [(tenant_id, device_id, at, FILL, value) for at, value in readings])
        at, value = max(readings)
        await conn.execute(
            """insert into device_state (device_id, path, tenant_id, time, v_num) values ($1, $2, $3, $4, $5)
               on conflict (device_id, path) do update set time = excluded.time, v_num = excluded.v_num""",
            device_id, FILL, tenant_id, at, value)


async def test_a_bins_fill_drop_completes_its_stop_once(db):
    city = await make_city(db, "seoul")
    now = datetime.now(UTC)
    seeded = await seed_route(db, city.tenant_id, bins=3, starts_at=now - timedelta(hours=1))
    idle = await seed_route(db, city.tenant_id, bins=1, starts_at=now - timedelta(hours=1), prefix="idle")
    async with db.tenant_tx(city.tenant_id) as conn:
        crew = await conn.fetchval("insert into crews (tenant_id, name) values ($1, 'Day team') returning id",
                                   city.tenant_id)
    await RouteService(db).assign(system_actor(city.tenant_id), seeded.route_id, crew)
    emptied, noisy, low = seeded.bin_ids
    before, after = now - timedelta(hours=2), now - timedelta(minutes=10)
    await _readings(db, city.tenant_id, emptied, [(before, 85.0), (after - timedelta(minutes=5), 86.0), (after, 6.0)])
    await _readings(db, city.tenant_id, noisy, [(before, 85.0), (after, 79.0)])
    await _readings(db, city.tenant_id, low, [(after, 12.0)])  # nothing known from before the route
    await _readings(db, city.tenant_id, idle.bin_ids[0], [(before, 85.0), (after, 3.0)])  # nobody drives it
    async with db.system_tx() as conn:  # built the evening before
        await conn.execute("update collection_plans set created_at = $1", now - timedelta(hours=12))

    assert await complete_by_fill(db, now) == 2
    assert await complete_by_fill(db, now + timedelta(seconds=30)) == 0
    route = await RouteService(db).get(system_actor(city.tenant_id), seeded.route_id)
    assert [(s.status, s.done_source) for s in route.stops] == [
        ("done", "fill"), ("planned", None), ("done", "fill"), ("planned", None)]
    assert route.status == "in_progress" and route.bins_emptied == 2 and route.progress.left == 2
    async with db.tenant_tx(city.tenant_id) as conn:
        rows = await conn.fetch("select device_id, at, source, fill_before, fill_after from bin_emptyings order by at, fill_after")
        executes = await conn.fetchval("select count(*) from commands")
        events = await conn.fetchval("select count(*) from events where kind = 'route.stop_updated'")
    # The emptying is the reading that showed it, recorded as the drop it was.
    assert [(r["device_id"], r["source"], r["fill_before"], r["fill_after"]) for r in rows] == [
        (emptied, "drop", 85.0, 6.0), (low, "drop", None, 12.0)]
    assert rows[0]["at"] == after and executes == 0 and events == 2
    idle_route = await RouteService(db).get(system_actor(city.tenant_id), idle.route_id)
    assert idle_route.stops[0].status == "planned"


async def test_a_low_reading_from_before_the_plan_is_no_emptying(db):
    """A route under way since the morning, planned at noon: the bin read 10 % at 09:00, filled up
    by 11:00 (which is why it was planned) and has not been emptied yet."""
    city = await make_city(db, "seoul")
    now = datetime.now(UTC)
    seeded = await seed_route(db, city.tenant_id, bins=2, starts_at=now - timedelta(hours=4))
    async with db.system_tx() as conn:
        await conn.execute("update collection_plans set created_at = $1", now - timedelta(hours=1))
        crew = await conn.fetchval("insert into crews (tenant_id, name) values ($1, 'Day team') returning id",
                                   city.tenant_id)
    await RouteService(db).assign(system_actor(city.tenant_id), seeded.route_id, crew)
    refilled, emptied = seeded.bin_ids
    await _readings(db, city.tenant_id, refilled, [(now - timedelta(hours=3), 10.0), (now - timedelta(hours=2), 90.0)])
    await _readings(db, city.tenant_id, emptied, [(now - timedelta(hours=3), 10.0), (now - timedelta(hours=2), 90.0),
                                                  (now - timedelta(minutes=5), 4.0)])
    assert await complete_by_fill(db, now) == 1
    route = await RouteService(db).get(system_actor(city.tenant_id), seeded.route_id)
    assert [(s.status, s.done_source) for s in route.stops[:2]] == [("planned", None), ("done", "fill")]


async def test_a_superseded_route_takes_no_marks_and_its_bins_drop_completes_only_the_new_route(db):
    city = await make_city(db, "seoul")
    now = datetime.now(UTC)
    seeded = await seed_route(db, city.tenant_id, bins=1, starts_at=now - timedelta(hours=1))
    actor = system_actor(city.tenant_id)
    async with db.system_tx() as conn:
        await conn.execute("update collection_plans set created_at = $1", now - timedelta(hours=12))
        crew = await conn.fetchval("insert into crews (tenant_id, name) values ($1, 'Day team') returning id",
                                   city.tenant_id)
    await RouteService(db).assign(actor, seeded.route_id, crew)
    route = await replanned(db, seeded)
    with pytest.raises(Conflict, match=str(route)):
        await RouteService(db).mark(actor, seeded.route_id, seeded.stop_ids[0], StopUpdate(StopStatus.DONE))
    await _readings(db, city.tenant_id, seeded.bin_ids[0], [(now - timedelta(hours=2), 85.0),
                                                             (now - timedelta(minutes=5), 4.0)])
    assert await complete_by_fill(db, now) == 1
    async with db.system_tx() as conn:
        rows = await conn.fetch("select route_id, status from collection_stops where kind = 'bin' order by status")
    assert [(r["route_id"], r["status"]) for r in rows] == [(route, "done"), (seeded.route_id, "planned")]


async def _scheduled(db: Database) -> list[asyncpg.Record]:
    async with db.system_tx() as conn:
        return await conn.fetch("select tenant_id, date, status, error from collection_plans "
                                "where source = 'schedule' order by tenant_id")


async def test_the_evening_plan_is_built_once_per_city_and_date(db):
    seoul, busan, daegu, incheon = [await make_city(db, slug) for slug in ("seoul", "busan", "daegu", "incheon")]
    for city in (seoul, busan, daegu):
        await add_vehicle(db, city.tenant_id)
    async with db.system_tx() as conn:
        await conn.execute("insert into collection_settings (tenant_id, plan_at) values ($1, null), ($2, '20:00')",
                           busan.tenant_id, daegu.tenant_id)
    evening = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)  # 18:30 in Seoul
    calls: list = []
    build = planner(calls)
    # Two nodes' passes at once (a leader deposed mid-pass and its successor): one plan.
    await asyncio.gather(plan_evenings(db, build, evening), plan_evenings(db, build, evening))
    tomorrow = date(2026, 12, 8)
    # Seoul has no settings row (18:00 by default); Busan never plans; Daegu's evening is later;
    # Incheon has no vehicles.
    assert [(r["tenant_id"], r["date"], r["status"]) for r in await _scheduled(db)] == [
        (seoul.tenant_id, tomorrow, "ready")]
    assert await plan_evenings(db, build, evening + timedelta(hours=1)) == []
    later = await plan_evenings(db, build, evening + timedelta(hours=2))  # 20:30: Daegu's turn
    assert len(later) == 1 and {c[0] for c in calls} == {seoul.tenant_id, daegu.tenant_id}
    assert incheon.tenant_id not in {c[0] for c in calls}
    # The next evening is the next date.
    assert len(await plan_evenings(db, build, evening + timedelta(days=1))) == 1


async def test_a_failed_evening_plan_is_recorded_and_tried_again(db):
    city = await make_city(db, "seoul")
    await add_vehicle(db, city.tenant_id)
    evening = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    calls: list = []
    assert await plan_evenings(db, planner(calls, fail={city.tenant_id}), evening) == []
    assert [(r["status"], r["error"]) for r in await _scheduled(db)] == [
        ("failed", "RuntimeError: no depot reachable")]
    # Not again at once; a few minutes later, and then it works: still one plan for the date.
    assert await plan_evenings(db, planner(calls), evening + timedelta(minutes=1)) == []
    assert len(await plan_evenings(db, planner(calls), evening + timedelta(minutes=6))) == 1
    assert [r["status"] for r in await _scheduled(db)] == ["ready"] and len(calls) == 2
    async with db.system_tx() as conn:
        kinds = [r["payload"]["status"] for r in await conn.fetch(
            "select payload from events where kind = 'plan.scheduled' order by id")]
    assert kinds == ["failed", "ready"]


async def test_the_evening_job_with_the_real_planner_builds_one_plan_per_date(db):
    """With the planner merged (fleet.collection.planning): one scheduled plan for tomorrow,
    however many passes and nodes ask."""
    planning = pytest.importorskip("fleet.collection.planning")
    city = await make_city(db, "seoul")
    seeded = await seed_route(db, city.tenant_id, bins=2)  # a depot, a truck and two bins
    async with db.system_tx() as conn:
        await conn.execute("insert into collection_settings (tenant_id, time_limit_s) values ($1, 1)", city.tenant_id)
    now = datetime.now(UTC)
    for device in seeded.bin_ids:
        await _readings(db, city.tenant_id, device, [(now - timedelta(hours=3), 60.0), (now, 90.0)])
    evening = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)  # 18:30 in Seoul (plan_at's default 18:00)
    await asyncio.gather(plan_evenings(db, planning.build_plan, evening),
                         plan_evenings(db, planning.build_plan, evening))
    assert await plan_evenings(db, planning.build_plan, evening + timedelta(minutes=1)) == []
    plans = await _scheduled(db)
    assert len(plans) == 1 and plans[0]["date"] == date(2026, 12, 8)


async def test_a_re_planned_route_is_neither_marked_nor_completed_by_fill(db):
    city = await make_city(db, "seoul")
    now = datetime.now(UTC)
    seeded = await seed_route(db, city.tenant_id, bins=2, starts_at=now - timedelta(hours=1))
    async with db.tenant_tx(city.tenant_id) as conn:
        crew = await conn.fetchval("insert into crews (tenant_id, name) values ($1, 'Day team') returning id",
                                   city.tenant_id)
    control_room = system_actor(city.tenant_id)
    await RouteService(db).assign(control_room, seeded.route_id, crew)
    async with db.tenant_tx(city.tenant_id) as conn:
        await conn.execute("update collection_plans set status = 'superseded' where id = $1", seeded.plan_id)
    await _readings(db, city.tenant_id, seeded.bin_ids[0],
                    [(now - timedelta(hours=2), 85.0), (now - timedelta(minutes=5), 4.0)])
    assert await complete_by_fill(db, now) == 0  # the new plan's route gets it
    stop = seeded.stop_ids[1]
    with pytest.raises(Conflict, match="re-planned"):
        await RouteService(db).mark(control_room, seeded.route_id, stop, StopUpdate(StopStatus.DONE))
