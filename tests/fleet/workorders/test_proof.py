"""The device proves the repair: alarms_changed verifies a done work order when its alarm is
proven clear, reopens it when the fault returns within the window; closing as done clears the
alarm; a citizen's report joins the device's open work order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleet.alarms.models import AlarmChange, ChangeKind, Severity
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.workorders.automation import open_for_alarms
from fleet.workorders.models import AlarmRule, WorkOrderCreate, WorkOrderRules, WorkOrderUpdate
from fleet.workorders.service import WorkOrderService, alarms_changed, for_citizen_report
from tests.fleet.workorders.conftest import raise_alarm


async def done_order_for_alarm(db, city, device):
    """A lamp-failure alarm, its work order from the city's rule, worked and closed as done."""
    service = WorkOrderService(db)
    await service.put_rules(city.principal, WorkOrderRules(
        alarm_rules=[AlarmRule(alarm_types=["lamp_failure"], work_order_type="repair_lamp",
                               unacknowledged_minutes=0)], reopen_window_days=7))
    alarm = await raise_alarm(db, city.tenant_id, device.id, "lamp_failure", "major", datetime.now(UTC))
    assert await open_for_alarms(db) == 1
    order = (await service.list(city.principal)).items[0]
    async with db.tenant_tx(city.tenant_id) as conn:
        crew = await conn.fetchval("insert into crews (tenant_id, name) values ($1, 'North') returning id", city.tenant_id)
    for update in (WorkOrderUpdate(crew_id=crew), WorkOrderUpdate(status="in_progress"), WorkOrderUpdate(status="done")):
        order = await service.update(city.principal, order.id, update, str(order.version))
    return service, alarm, order


async def alarm_row(db, alarm_id):
    async with db.system_tx() as conn:
        return await conn.fetchrow("select status, clear_reason, cleared_by from alarms where id = $1", alarm_id)


def change(city, device, alarm, kind, at=None):
    return AlarmChange(city.tenant_id, alarm, device.id, "lamp_failure", Severity.MAJOR, kind, at or datetime.now(UTC))


async def test_done_clears_the_alarm_and_the_device_proves_it(db, lit_city):
    city, device = lit_city
    service, alarm, order = await done_order_for_alarm(db, city, device)
    cleared = await alarm_row(db, alarm)
    assert (cleared["status"], cleared["clear_reason"]) == ("cleared", "work_order")
    at = datetime.now(UTC)
    async with db.system_tx() as conn:
        await alarms_changed(conn, [change(city, device, alarm, ChangeKind.PROVEN_CLEAR, at)])
    proven = await service.get(city.principal, order.id)
    assert (proven.status, proven.verified_at) == ("verified", at)
    async with db.system_tx() as conn:
        actions = await conn.fetch(
            "select action, api_key_id, actor from audit_log where entity_id = $1 order by id", str(order.id))
        kinds = await conn.fetch("select kind from events where subject_id = $1 order by id", str(order.id))
    assert [a["action"] for a in actions] == ["work_order.create"] + ["work_order.update"] * 4
    assert actions[-1]["actor"] == "system" and actions[0]["actor"] == "system"
    assert [k["kind"] for k in kinds] == ["work_order.created"] + ["work_order.updated"] * 4
    # A verified work order is not reopened any more.
    again = await raise_alarm(db, city.tenant_id, device.id, "lamp_failure", "major", datetime.now(UTC))
    async with db.system_tx() as conn:
        await alarms_changed(conn, [change(city, device, again, ChangeKind.RAISED)])
    assert (await service.get(city.principal, order.id)).status == "verified"


async def test_the_fault_again_within_the_window_reopens(db, lit_city):
    city, device = lit_city
    service, _, order = await done_order_for_alarm(db, city, device)
    late = datetime.now(UTC) + timedelta(days=8)
    again = await raise_alarm(db, city.tenant_id, device.id, "lamp_failure", "major", late)
    async with db.system_tx() as conn:
        # Outside the window: a new fault, not a failed repair.
        await alarms_changed(conn, [change(city, device, again, ChangeKind.RAISED, late)])
    assert (await service.get(city.principal, order.id)).status == "done"
    async with db.system_tx() as conn:
        await alarms_changed(conn, [change(city, device, again, ChangeKind.RAISED, datetime.now(UTC))])
    reopened = await service.get(city.principal, order.id)
    assert (reopened.status, reopened.reopened_by_alarm_id, reopened.closed_at) == ("reopened", again, None)
    # The rule does not open a second work order for the alarm that reopened this one.
    assert await open_for_alarms(db) == 0
    # Worked again and done: the new alarm is cleared, and its proof verifies the work order.
    order = await service.update(city.principal, order.id, WorkOrderUpdate(status="in_progress"), str(reopened.version))
    order = await service.update(city.principal, order.id, WorkOrderUpdate(status="done"), str(order.version))
    assert (await alarm_row(db, again))["status"] == "cleared"
    async with db.system_tx() as conn:
        await alarms_changed(conn, [change(city, device, again, ChangeKind.PROVEN_CLEAR)])
    assert (await service.get(city.principal, order.id)).status == "verified"


async def test_done_after_the_device_reported_the_fault_gone_is_verified_at_once(db, lit_city):
    city, device = lit_city
    service = WorkOrderService(db)
    alarm = await raise_alarm(db, city.tenant_id, device.id, "lamp_failure", "major", datetime.now(UTC))
    order = await service.create(city.principal, WorkOrderCreate(type="repair_lamp", device_ids=[device.id]))
    async with db.system_tx() as conn:
        # Linked to the alarm as the city's rule does; the light reported the lamp fine (hysteresis).
        await conn.execute("update work_orders set alarm_id = $1 where id = $2", alarm, order.id)
        await conn.execute("update alarms set clearing_since = now() where id = $1", alarm)
        crew = await conn.fetchval("insert into crews (tenant_id, name) values ($1, 'North') returning id",
                                   city.tenant_id)
    for update in (WorkOrderUpdate(crew_id=crew), WorkOrderUpdate(status="in_progress"),
                   WorkOrderUpdate(status="done")):
        order = await service.update(city.principal, order.id, update, str(order.version))
    assert (order.status, order.verified_at is not None) == ("verified", True)
    assert (await alarm_row(db, alarm))["clear_reason"] == "work_order"


async def test_a_citizen_report_joins_the_open_work_order(db, lit_city):
    city, device = lit_city
    alarm = await raise_alarm(db, city.tenant_id, device.id, "citizen_report", "minor", datetime.now(UTC))
    async with db.system_tx() as conn:
        first = await for_citizen_report(conn, city.tenant_id, device.id, alarm, "repair_lamp", "dark since Monday")
        second = await for_citizen_report(conn, city.tenant_id, device.id, alarm, "repair_lamp", "still dark")
    assert first == second
    order = await WorkOrderService(db).get(city.principal, first)
    assert (order.source, order.alarm_id, order.notes, order.device_ids) == (
        "citizen", alarm, "dark since Monday\nstill dark", [device.id])
    # A device with an operator's open work order: the report joins it.
    other = await WorkOrderService(db).create(city.principal, WorkOrderCreate(type="other", location=None,
                                                                              device_ids=[device.id]))
    assert other.id != first


async def test_a_batch_of_raised_alarms_reopens_only_the_repair_its_fault_returned_to(db, lit_city):
    city, device = lit_city
    service, _, order = await done_order_for_alarm(db, city, device)
    others = [await DeviceService(db).create_validated(
        city.principal, NewDevice(DeviceKind.STREETLIGHT, f"seoul-{n}", 37.5 + n / 1000, 127.0, serial=f"S{n}"))
        for n in range(2, 5)]
    now = datetime.now(UTC)
    elsewhere = [change(city, other, await raise_alarm(db, city.tenant_id, other.id, "lamp_failure", "major", now),
                        ChangeKind.RAISED, now) for other in others]
    day_burner = await raise_alarm(db, city.tenant_id, device.id, "day_burner", "minor", now)
    again = await raise_alarm(db, city.tenant_id, device.id, "lamp_failure", "major", now)
    batch = [*elsewhere[:2], AlarmChange(city.tenant_id, day_burner, device.id, "day_burner", Severity.MINOR,
                                         ChangeKind.RAISED, now),
             change(city, device, again, ChangeKind.RAISED, now), elsewhere[2]]
    async with db.system_tx() as conn:
        await alarms_changed(conn, batch)
    reopened = await service.get(city.principal, order.id)
    assert (reopened.status, reopened.reopened_by_alarm_id) == ("reopened", again)
    assert [o.id for o in (await service.list(city.principal)).items] == [order.id]
