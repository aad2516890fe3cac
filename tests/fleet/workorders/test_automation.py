"""Alarms become work orders by the city's rule: exactly one per alarm, whoever runs the pass."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fleet.workorders.automation import open_for_alarms
from fleet.workorders.models import AlarmRule, WorkOrderRules, WorkOrderUpdate
from fleet.workorders.service import WorkOrderService
from tests.fleet.workorders.conftest import raise_alarm

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


async def test_a_rule_opens_exactly_one_work_order_per_alarm(db, lit_city):
    city, device = lit_city
    service = WorkOrderService(db)
    await service.put_rules(city.principal, WorkOrderRules(alarm_rules=[AlarmRule(
        alarm_types=["lamp_failure", "dark_at_night"], work_order_type="repair_lamp", min_severity="major",
        unacknowledged_minutes=30, priority="urgent")]))
    old = await raise_alarm(db, city.tenant_id, device.id, "lamp_failure", "major", NOW - timedelta(hours=1))
    await raise_alarm(db, city.tenant_id, device.id, "dark_at_night", "major", NOW - timedelta(minutes=5))
    await raise_alarm(db, city.tenant_id, device.id, "day_burner", "critical", NOW - timedelta(hours=2))
    await raise_alarm(db, city.tenant_id, device.id, "power_anomaly", "minor", NOW - timedelta(hours=2))
    await raise_alarm(db, city.tenant_id, device.id, "low_battery", "major", NOW - timedelta(hours=2),
                      status="acknowledged")

    # Two nodes at once: the guard decides.
    results = await asyncio.gather(*(open_for_alarms(db, NOW) for _ in range(3)))
    assert sum(results) == 1
    assert await open_for_alarms(db, NOW) == 0
    orders = (await service.list(city.principal)).items
    assert len(orders) == 1
    order = orders[0]
    assert (order.source, order.alarm_id, order.type, order.priority, order.device_ids) == (
        "alarm", old, "repair_lamp", "urgent", [device.id])
    assert order.due_by == NOW + timedelta(hours=4)
    # The younger alarm (the failed lamp is dark too) is old enough now, but the lamp's crew is
    # already going: no second trip while that work order is open.
    assert await open_for_alarms(db, NOW + timedelta(minutes=30)) == 0
    async with db.system_tx() as conn:
        audit = await conn.fetchval("select count(*) from audit_log where action = 'work_order.create'")
        events = await conn.fetchval("select count(*) from events where kind = 'work_order.created'")
    assert (audit, events) == (1, 1)


async def test_one_trip_per_device_and_work_and_none_for_a_condition_already_gone(db, lit_city):
    city, device = lit_city
    service = WorkOrderService(db)
    await service.put_rules(city.principal, WorkOrderRules(alarm_rules=[AlarmRule(
        alarm_types=["lamp_failure", "dark_at_night"], work_order_type="repair_lamp", unacknowledged_minutes=0)]))
    failed = await raise_alarm(db, city.tenant_id, device.id, "lamp_failure", "major", NOW - timedelta(hours=1))
    dark = await raise_alarm(db, city.tenant_id, device.id, "dark_at_night", "major", NOW - timedelta(hours=1))
    # Both due in the same pass: one work order, one trip.
    assert await open_for_alarms(db, NOW) == 1
    [order] = (await service.list(city.principal)).items
    assert order.alarm_id == failed
    assert await open_for_alarms(db, NOW) == 0
    # That work order cancelled: none for an alarm the light already reports gone (hysteresis)...
    async with db.system_tx() as conn:
        await conn.execute("update alarms set clearing_since = $2 where id = $1", dark, NOW)
    await service.update(city.principal, order.id, WorkOrderUpdate(status="cancelled"), str(order.version))
    assert await open_for_alarms(db, NOW) == 0
    # ...but one once it is present again.
    async with db.system_tx() as conn:
        await conn.execute("update alarms set clearing_since = null where id = $1", dark)
    assert await open_for_alarms(db, NOW) == 1
    assert {o.alarm_id for o in (await service.list(city.principal)).items} == {failed, dark}


async def test_shelved_alarms_and_cities_without_rules_get_none(db, lit_city):
    city, device = lit_city
    alarm = await raise_alarm(db, city.tenant_id, device.id, "lamp_failure", "critical", NOW - timedelta(days=1))
    assert await open_for_alarms(db, NOW) == 0  # no rule yet
    await WorkOrderService(db).put_rules(city.principal, WorkOrderRules(alarm_rules=[AlarmRule(
        alarm_types=["lamp_failure"], work_order_type="repair_lamp")]))
    async with db.system_tx() as conn:
        await conn.execute(
            """insert into alarm_shelves (tenant_id, alarm_id, until, created_by)
               values ($1, $2, $3, 'test')""", city.tenant_id, alarm, NOW + timedelta(hours=1))
    assert await open_for_alarms(db, NOW) == 0
    assert await open_for_alarms(db, NOW + timedelta(hours=2)) == 1
