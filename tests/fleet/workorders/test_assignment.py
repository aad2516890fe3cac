"""Nearest-crew assignment against real PostgreSQL: a fresh reported position beats the home base,
a stale one falls back to it, ties go to the crew with fewer open work orders, then by name; rules,
operators and citizens' reports each ask for it their own way."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fleet.access.models import Principal, Role
from fleet.crews.models import Place, PositionReport
from fleet.crews.service import CrewService
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.workorders.assignment import for_citizen_reports
from fleet.workorders.automation import open_for_alarms
from fleet.workorders.models import AlarmRule, WorkOrderCreate, WorkOrderRules, WorkOrderUpdate
from fleet.workorders.service import WorkOrderService, for_citizen_report
from tests.conftest import make_city
from tests.fleet.workorders.conftest import raise_alarm

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
# The lit city's streetlight stands at (37.5, 127.0); 0.01 degree of latitude is about 1.1 km.
NEAR, FAR, FARTHER = Place(37.51, 127.0), Place(37.6, 127.0), Place(37.7, 127.0)


def crews_of(db) -> CrewService:
    return CrewService(db, clock=lambda: NOW)


async def report(db, city, crew, place: Place, ago: timedelta) -> None:
    tablet = Principal(city.tenant_id, city.principal.tenant_slug, "Asia/Seoul", Role.CREW, None, crew_id=crew.id)
    await crews_of(db).report_position(tablet, PositionReport(place.lat, place.lon, 5.0, NOW - ago))


async def nearest_for(db, city, device) -> str | None:
    """The crew a work order on the device is given when the operator asks for the nearest."""
    order = await WorkOrderService(db, clock=lambda: NOW).create(city.principal, WorkOrderCreate(
        type="repair_lamp", device_ids=[device.id], assign="nearest_crew"))
    return order.crew_id


async def test_a_fresh_position_beats_the_home_base_and_a_stale_one_falls_back(db, lit_city):
    city, device = lit_city
    crews = crews_of(db)
    alpha = await crews.create(city.principal, "Alpha", FAR)
    bravo = await crews.create(city.principal, "Bravo", NEAR)
    await crews.create(city.principal, "Nowhere")  # neither base nor position: never chosen
    assert await nearest_for(db, city, device) == bravo.id

    # Bravo's tablet says it is out beyond Alpha's base: where it is counts, not where it is based.
    await report(db, city, bravo, FARTHER, ago=timedelta(minutes=10))
    assert await nearest_for(db, city, device) == alpha.id

    # Three hours later that fix says nothing any more (the default window is two hours).
    await report(db, city, bravo, FARTHER, ago=timedelta(hours=3))  # older: does not replace the newer fix
    assert (await crews.get(city.principal, bravo.id)).position.at == NOW - timedelta(minutes=10)
    await WorkOrderService(db).put_rules(city.principal, WorkOrderRules(crew_position_fresh_minutes=5))
    assert await nearest_for(db, city, device) == bravo.id

    # A crew with no base at all is found by its fresh position alone, and dropped once it is stale.
    charlie = await crews.create(city.principal, "Charlie")
    await report(db, city, charlie, Place(37.5001, 127.0), ago=timedelta(minutes=1))
    assert await nearest_for(db, city, device) == charlie.id
    await WorkOrderService(db).put_rules(city.principal, WorkOrderRules(crew_position_fresh_minutes=120))
    await report(db, city, charlie, FARTHER, ago=timedelta(seconds=30))
    assert await nearest_for(db, city, device) == alpha.id


async def test_ties_go_to_fewer_open_work_orders_then_by_name(db, lit_city):
    city, device = lit_city
    crews = crews_of(db)
    nest = await crews.create(city.principal, "Nest", NEAR)
    hive = await crews.create(city.principal, "Hive", NEAR)
    assert await nearest_for(db, city, device) == hive.id  # same place, no work: by name
    # Hive now has that open work order: Nest, with none, is next, then they are even again.
    assert await nearest_for(db, city, device) == nest.id
    assert await nearest_for(db, city, device) == hive.id
    # Closed work orders do not count against a crew.
    service = WorkOrderService(db, clock=lambda: NOW)
    for order in (await service.list(city.principal, crew_id=hive.id)).items:
        await service.update(city.principal, order.id, _cancel(), str(order.version))
    assert await nearest_for(db, city, device) == hive.id


def _cancel() -> WorkOrderUpdate:
    return WorkOrderUpdate(status="cancelled")


async def test_without_any_placed_crew_the_work_order_stays_unassigned(db, lit_city):
    city, device = lit_city
    await crews_of(db).create(city.principal, "Nowhere")
    order = await WorkOrderService(db, clock=lambda: NOW).create(city.principal, WorkOrderCreate(
        type="repair_lamp", device_ids=[device.id], assign="nearest_crew"))
    assert (order.status, order.crew_id) == ("new", None)


async def test_a_rule_with_nearest_crew_assigns_its_work_order_once_audited_and_published(db, lit_city):
    city, device = lit_city
    crews = crews_of(db)
    await crews.create(city.principal, "Far away", FAR)
    near = await crews.create(city.principal, "Around the corner", NEAR)
    # Another city's crew right at the lamp is behind its wall, even for the system's pass.
    busan = await make_city(db, "busan")
    await crews.create(busan.principal, "Busan crew", Place(37.5, 127.0))
    await WorkOrderService(db).put_rules(city.principal, WorkOrderRules(alarm_rules=[
        AlarmRule(alarm_types=["lamp_failure"], work_order_type="repair_lamp", unacknowledged_minutes=0,
                  assign="nearest_crew"),
        AlarmRule(alarm_types=["day_burner"], work_order_type="other", unacknowledged_minutes=0)]))
    lamp = await raise_alarm(db, city.tenant_id, device.id, "lamp_failure", "major", NOW - timedelta(minutes=5))
    burner = await raise_alarm(db, city.tenant_id, device.id, "day_burner", "major", NOW - timedelta(minutes=5))

    assert await open_for_alarms(db, NOW) == 2
    assert await open_for_alarms(db, NOW) == 0
    orders = {o.alarm_id: o for o in (await WorkOrderService(db).list(city.principal)).items}
    assigned, left = orders[lamp], orders[burner]
    assert (assigned.status, assigned.crew_id) == ("assigned", near.id)
    assert (left.status, left.crew_id) == ("new", None)  # a rule that names no assignment keeps the old way
    async with db.system_tx() as conn:
        audit = await conn.fetchval(
            "select after from audit_log where action = 'work_order.create' and entity_id = $1", str(assigned.id))
        event = await conn.fetchval(
            "select payload from events where kind = 'work_order.created' and subject_id = $1", str(assigned.id))
    for entry in (audit, event):
        entry = json.loads(entry) if isinstance(entry, str) else entry
        assert (entry["status"], entry["crew_id"]) == ("assigned", str(near.id))


async def test_citizen_reports_follow_the_citys_rule_for_citizen_report_alarms(db, lit_city):
    city, device = lit_city
    near = await crews_of(db).create(city.principal, "Around the corner", NEAR)

    other = await DeviceService(db).create_validated(
        city.principal, NewDevice(DeviceKind.STREETLIGHT, "seoul-2", 37.5, 127.0, serial="S2"))

    async def citizen_work_order(device):
        alarm = await raise_alarm(db, city.tenant_id, device.id, "citizen_report", "minor", NOW)
        async with db.system_tx() as conn:
            order_id = await for_citizen_report(conn, city.tenant_id, device.id, alarm, "repair_lamp", "dark")
        return await WorkOrderService(db).get(city.principal, order_id)

    first = await citizen_work_order(device)
    assert (first.status, first.crew_id) == ("new", None)  # no rule asks for it
    await WorkOrderService(db).put_rules(city.principal, WorkOrderRules(alarm_rules=[AlarmRule(
        alarm_types=["citizen_report"], work_order_type="repair_lamp", min_severity="minor",
        assign="nearest_crew")]))
    second = await citizen_work_order(other)
    assert (second.status, second.crew_id, second.source) == ("assigned", near.id, "citizen")


def test_only_a_citizen_report_rule_with_nearest_crew_sends_reports_to_the_nearest_crew():
    lamp = AlarmRule(alarm_types=["lamp_failure"], work_order_type="repair_lamp", assign="nearest_crew")
    reports = AlarmRule(alarm_types=["citizen_report", "lamp_failure"], work_order_type="other")
    assert for_citizen_reports(WorkOrderRules()) == "none"
    assert for_citizen_reports(WorkOrderRules(alarm_rules=[lamp, reports])) == "none"
    reports_nearest = AlarmRule(alarm_types=["citizen_report"], work_order_type="other", assign="nearest_crew")
    assert for_citizen_reports(WorkOrderRules(alarm_rules=[reports, reports_nearest])) == "nearest_crew"
