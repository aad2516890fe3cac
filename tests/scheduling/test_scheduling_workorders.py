"""The leader runs the work-order jobs beside the lighting ones: an overdue alarm gets its work order."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.scheduling.leader import LeaderElection, together
from fleet.scheduling.lighting import LightingJobs
from fleet.scheduling.workorders import WorkOrderJobs
from fleet.workorders.models import AlarmRule, WorkOrderRules
from fleet.workorders.service import WorkOrderService
from tests.conftest import make_city
from tests.fleet.workorders.conftest import raise_alarm
from tests.scheduling.conftest import eventually


async def test_the_leader_opens_work_orders_for_overdue_alarms(db):
    city = await make_city(db, "seoul")
    device = await DeviceService(db).create_validated(
        city.principal, NewDevice(DeviceKind.STREETLIGHT, "seoul-1", 37.5, 127.0, serial="S1"))
    service = WorkOrderService(db)
    await service.put_rules(city.principal, WorkOrderRules(alarm_rules=[AlarmRule(
        alarm_types=["lamp_failure"], work_order_type="repair_lamp", unacknowledged_minutes=10)]))
    alarm = await raise_alarm(db, city.tenant_id, device.id, "lamp_failure", "major",
                              datetime.now(UTC) - timedelta(minutes=11))
    jobs = WorkOrderJobs(db, interval_s=0.1)
    election = LeaderElection(db, "node-a", retry_s=0.2, check_s=0.2)
    task = asyncio.create_task(election.run(together(LightingJobs(db).lead, jobs.lead)))
    try:
        orders = await eventually(lambda: _orders(service, city))
        assert [o.alarm_id for o in orders] == [alarm]
        await eventually(lambda: jobs.passes >= 3)
        assert len(await _orders(service, city)) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _orders(service, city):
    return (await service.list(city.principal)).items
