"""AlarmService.apply and the sweep on real PostgreSQL: raise, repeat, hysteresis, clear, severity
settings, shelving, a work order's clear proven, transitions handed over, and the city wall."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleet.alarms.models import AlarmType, ChangeKind, Finding, Severity
from fleet.alarms.service import AlarmService, clear_for_work_order, merge_citizen_report
from fleet.events.models import START
from fleet.events.repository import EventRepository
from fleet.registry.service import DeviceService
from tests.conftest import blocked_by, make_city

T0 = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
LAMP = AlarmType.LAMP_FAILURE


async def lights(db, city, count: int = 1) -> list:
    service = DeviceService(db)
    return [await service.create(city.principal, {
        "kind": "streetlight", "endpoint": f"{city.slug}-{n}", "lat": 37.55 + n * 0.001, "lon": 126.95,
        "district": "Jung-gu"}) for n in range(count)]


def seen(city, device, present: bool, minutes: float, alarm_type=LAMP, **extra) -> Finding:
    return Finding(city.tenant_id, device.id, alarm_type, present, T0 + timedelta(minutes=minutes), **extra)


async def alarms_of(db, city, device) -> list:
    async with db.tenant_tx(city.tenant_id, readonly=True) as conn:
        return await conn.fetch("select * from alarms where device_id = $1 order by seq", device.id)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list] = []

    async def __call__(self, conn, changes) -> None:
        assert conn.is_in_transaction()
        self.calls.append(changes)

    @property
    def kinds(self) -> list[ChangeKind]:
        return [c.kind for call in self.calls for c in call]


async def test_raise_repeat_and_clear_after_absence_with_hysteresis(db):
    seoul = await make_city(db, "seoul")
    [light] = await lights(db, seoul)
    recorder = Recorder()
    service = AlarmService(db, on_changes=recorder)

    await service.apply([seen(seoul, light, True, 0, value={"lamp": "failed"}, detail="lamp failure bit")])
    [alarm] = await alarms_of(db, seoul, light)
    assert (alarm["status"], alarm["count"], alarm["severity"]) == ("active", 1, "major")
    assert recorder.kinds == [ChangeKind.RAISED]
    [[raised]] = recorder.calls
    assert (raised.tenant_id, raised.alarm_id, raised.device_id, raised.type, raised.severity, raised.at,
            raised.shelved) == (seoul.tenant_id, alarm["id"], light.id, "lamp_failure", Severity.MAJOR, T0, False)

    # Reports of the same, continuing condition move last_seen, not count, and are no transition.
    await service.apply([seen(seoul, light, True, 1), seen(seoul, light, True, 2)])
    [alarm] = await alarms_of(db, seoul, light)
    assert alarm["count"] == 1 and alarm["last_seen"] == T0 + timedelta(minutes=2)
    assert recorder.kinds == [ChangeKind.RAISED]

    # Flapping within clear_after_minutes (10): one alarm whose count grows per occurrence.
    for minute in (3, 5, 7):
        await service.apply([seen(seoul, light, False, minute)])
        await service.apply([seen(seoul, light, True, minute + 1)])
    alarms = await alarms_of(db, seoul, light)
    assert len(alarms) == 1 and alarms[0]["count"] == 4 and alarms[0]["status"] == "active"
    assert recorder.kinds == [ChangeKind.RAISED] + [ChangeKind.REPEATED] * 3

    await service.apply([seen(seoul, light, False, 10)])
    await service.apply([seen(seoul, light, False, 15)])
    assert (await alarms_of(db, seoul, light))[0]["status"] == "active"
    await service.apply([seen(seoul, light, False, 20)])
    [alarm] = await alarms_of(db, seoul, light)
    assert (alarm["status"], alarm["clear_reason"], alarm["cleared_by"]) == ("cleared", "condition", "fleet")
    assert recorder.kinds[-1] is ChangeKind.CLEARED

    # After the clear, the condition coming back is a new alarm.
    await service.apply([seen(seoul, light, True, 30)])
    assert [a["status"] for a in await alarms_of(db, seoul, light)] == ["cleared", "active"]

    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        events = await EventRepository(conn).after(seoul.tenant_id, START, 100)
    assert [e.kind for e in events] == (["alarm.raised"] + ["alarm.updated"] * 3 + ["alarm.cleared", "alarm.raised"])
    assert events[0].payload["type"] == "lamp_failure" and events[0].payload["count"] == 1
    assert events[0].payload["device_id"] == str(light.id) and "tenant_id" not in events[0].payload


async def test_one_batch_with_many_findings_collapses_per_device_and_type(db):
    seoul = await make_city(db, "seoul")
    a, b = await lights(db, seoul, 2)
    service = AlarmService(db)
    await service.apply([seen(seoul, a, True, 2), seen(seoul, a, False, 1), seen(seoul, a, True, 0),
                         seen(seoul, b, False, 0), seen(seoul, b, True, 0, AlarmType.DAY_BURNER)])
    [alarm_a] = await alarms_of(db, seoul, a)
    assert alarm_a["count"] == 2 and alarm_a["first_seen"] == T0 and alarm_a["clearing_since"] is None
    [alarm_b] = await alarms_of(db, seoul, b)
    assert alarm_b["type"] == "day_burner" and alarm_b["severity"] == "minor"


async def test_sweep_clears_alarms_of_devices_that_stopped_reporting(db):
    seoul = await make_city(db, "seoul")
    [light] = await lights(db, seoul)
    recorder = Recorder()
    now = datetime.now(UTC)
    service = AlarmService(db, on_changes=recorder, clock=lambda: now)
    await service.apply([Finding(seoul.tenant_id, light.id, LAMP, True, now - timedelta(minutes=30))])
    await service.apply([Finding(seoul.tenant_id, light.id, LAMP, False, now - timedelta(minutes=12))])
    assert (await alarms_of(db, seoul, light))[0]["status"] == "active"
    assert await service.sweep() == 1
    assert (await alarms_of(db, seoul, light))[0]["clear_reason"] == "condition"
    assert recorder.kinds[-1] is ChangeKind.CLEARED
    assert await service.sweep() == 0


async def test_severity_from_city_and_group_settings(db):
    seoul = await make_city(db, "seoul")
    a, b, c = await lights(db, seoul, 3)
    async with db.tenant_tx(seoul.tenant_id) as conn:
        await conn.execute("insert into alarm_settings (tenant_id, settings) values ($1, $2)",
                           seoul.tenant_id, {"severities": {"lamp_failure": "critical"}, "clear_after_minutes": 1})
        for name, severity in (("b-group", "warning"), ("a-group", "minor")):
            group = await conn.fetchval("insert into device_groups (tenant_id, name) values ($1, $2) returning id",
                                        seoul.tenant_id, name)
            await conn.execute("insert into alarm_settings (tenant_id, group_id, settings) values ($1, $2, $3)",
                               seoul.tenant_id, group, {"severities": {"lamp_failure": severity}})
            devices = [b, c] if name == "b-group" else [c]
            for device in devices:
                await conn.execute("insert into device_group_members (tenant_id, group_id, device_id)"
                                   " values ($1, $2, $3)", seoul.tenant_id, group, device.id)
    service = AlarmService(db)
    await service.apply([seen(seoul, d, True, 0, severity=Severity.WARNING) for d in (a, b, c)])
    severities = [(await alarms_of(db, seoul, d))[0]["severity"] for d in (a, b, c)]
    # the city's override beats the rule's; a group's beats the city's; the first group by name wins
    assert severities == ["critical", "warning", "minor"]
    settings = await service.effective_settings(seoul.tenant_id, [a.id, c.id])
    assert settings[a.id].clear_after_minutes == 1 and settings[c.id].severities["lamp_failure"] == "minor"
    # clear_after_minutes of 1 from the city: cleared after a minute's absence
    await service.apply([seen(seoul, a, False, 1), seen(seoul, a, False, 2)])
    assert (await alarms_of(db, seoul, a))[0]["status"] == "cleared"


async def test_shelved_alarm_is_still_tracked_and_flagged(db):
    seoul = await make_city(db, "seoul")
    [light] = await lights(db, seoul)
    recorder = Recorder()
    service = AlarmService(db, on_changes=recorder)
    async with db.tenant_tx(seoul.tenant_id) as conn:
        await conn.execute("insert into alarm_shelves (tenant_id, device_id, until, created_by)"
                           " values ($1, $2, now() + interval '1 hour', 'test')", seoul.tenant_id, light.id)
    await service.apply([seen(seoul, light, True, 0)])
    await service.apply([seen(seoul, light, False, 1)])
    await service.apply([seen(seoul, light, True, 2)])
    [alarm] = await alarms_of(db, seoul, light)
    assert alarm["count"] == 2
    assert [c.shelved for call in recorder.calls for c in call] == [True, True]


async def test_work_order_clear_is_proven_by_the_next_absent_finding(db):
    seoul = await make_city(db, "seoul")
    [light] = await lights(db, seoul)
    recorder = Recorder()
    service = AlarmService(db, on_changes=recorder)
    await service.apply([seen(seoul, light, True, 0)])
    [alarm] = await alarms_of(db, seoul, light)
    async with db.system_tx() as conn:
        await clear_for_work_order(conn, seoul.tenant_id, [alarm["id"]], "crew-7", T0 + timedelta(minutes=5))
    [alarm] = await alarms_of(db, seoul, light)
    assert (alarm["status"], alarm["clear_reason"], alarm["verified_at"]) == ("cleared", "work_order", None)
    await service.apply([seen(seoul, light, False, 6)])
    [alarm] = await alarms_of(db, seoul, light)
    assert alarm["verified_at"] == T0 + timedelta(minutes=6)
    assert recorder.kinds[-1] is ChangeKind.PROVEN_CLEAR
    await service.apply([seen(seoul, light, False, 7)])
    assert recorder.kinds.count(ChangeKind.PROVEN_CLEAR) == 1


async def test_work_order_clear_of_a_condition_the_device_already_reported_gone_is_proven_at_once(db):
    """A repaired device reports the fault gone before the crew closes the work order (and one
    that reports only changes says nothing more): the close itself is proven."""
    seoul = await make_city(db, "seoul")
    clearing, cleared, still_failed, again = await lights(db, seoul, 4)
    service = AlarmService(db, on_changes=Recorder())
    await service.apply([seen(seoul, light, True, 0) for light in (clearing, cleared, still_failed)])
    await service.apply([seen(seoul, clearing, False, 2)])  # hysteresis: clearing, still open
    await service.apply([seen(seoul, cleared, False, 2), seen(seoul, cleared, False, 20)])  # cleared by it
    ids = {light.id: (await alarms_of(db, seoul, light))[0]["id"] for light in (clearing, cleared, still_failed)}
    closed = T0 + timedelta(minutes=30)
    async with db.system_tx() as conn:
        changes = await clear_for_work_order(conn, seoul.tenant_id, list(ids.values()), "crew-7", closed)
    assert {(c.alarm_id, c.kind, c.at) for c in changes} == {
        (ids[clearing.id], ChangeKind.PROVEN_CLEAR, closed), (ids[cleared.id], ChangeKind.PROVEN_CLEAR, closed)}
    [unproven] = await alarms_of(db, seoul, still_failed)
    assert (unproven["status"], unproven["clear_reason"], unproven["verified_at"]) == ("cleared", "work_order", None)
    # Cleared by the condition but failed again since: the open alarm says the fault is back.
    await service.apply([seen(seoul, again, True, 0), seen(seoul, again, False, 1), seen(seoul, again, False, 20)])
    await service.apply([seen(seoul, again, True, 25)])
    first = (await alarms_of(db, seoul, again))[0]["id"]
    async with db.system_tx() as conn:
        assert await clear_for_work_order(conn, seoul.tenant_id, [first], "crew-7", closed) == []


async def test_citizen_report_joins_the_open_alarm_or_opens_one(db):
    seoul = await make_city(db, "seoul")
    a, b = await lights(db, seoul, 2)
    await AlarmService(db).apply([seen(seoul, a, True, 0)])
    async with db.system_tx() as conn:
        joined = await merge_citizen_report(conn, seoul.tenant_id, a.id, "dark street", T0)
        opened = await merge_citizen_report(conn, seoul.tenant_id, b.id, "dark street", T0)
    [alarm_a] = await alarms_of(db, seoul, a)
    assert joined == alarm_a["id"] and alarm_a["count"] == 2
    [alarm_b] = await alarms_of(db, seoul, b)
    assert opened == alarm_b["id"] and (alarm_b["type"], alarm_b["source"]) == ("citizen_report", "citizen")


async def test_other_citys_findings_never_touch_this_city(db):
    seoul = await make_city(db, "seoul")
    busan = await make_city(db, "busan")
    [seoul_light] = await lights(db, seoul)
    [busan_light] = await lights(db, busan)
    service = AlarmService(db)
    await service.apply([seen(seoul, seoul_light, True, 0), seen(busan, busan_light, True, 0)])
    await service.apply([seen(busan, busan_light, False, 0), seen(busan, busan_light, False, 30)])
    assert (await alarms_of(db, seoul, seoul_light))[0]["status"] == "active"
    assert (await alarms_of(db, busan, busan_light))[0]["status"] == "cleared"
    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        assert await conn.fetchval("select count(*) from alarms") == 1


async def test_absent_findings_without_alarms_write_nothing(db):
    seoul = await make_city(db, "seoul")
    devices = await lights(db, seoul, 3)
    recorder = Recorder()
    await AlarmService(db, on_changes=recorder).apply([seen(seoul, d, False, 0) for d in devices])
    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        assert await conn.fetchval("select count(*) from alarms") == 0
        assert await conn.fetchval("select count(*) from events") == 0
    assert recorder.calls == []


async def test_device_offline_beyond_lifetime_and_grace_raises_and_clears_on_return(db):
    from fleet.registrations.models import RegisterRequest
    from fleet.registrations.service import RegistrationService

    seoul = await make_city(db, "seoul")
    [light] = await lights(db, seoul)
    recorder = Recorder()
    clock = {"now": datetime.now(UTC)}
    alarms = AlarmService(db, on_changes=recorder, clock=lambda: clock["now"])
    registrations = RegistrationService(db, "test", alarm_service=alarms)
    request = RegisterRequest(light.endpoint, "127.0.0.1", 5683, 1, "U", "1.1", "</3/0>")
    await registrations.register(request)
    async with db.system_tx() as conn:  # the lifetime ran out a minute ago
        await conn.execute("update registrations set expires_at = now() - interval '1 minute'")
    assert await registrations.expire(timedelta(0)) == [light.id]

    assert await alarms.sweep() == 0  # within offline_grace_minutes (5)
    clock["now"] += timedelta(minutes=5)
    assert await alarms.sweep() == 1
    [alarm] = await alarms_of(db, seoul, light)
    assert (alarm["type"], alarm["status"], alarm["severity"]) == ("device_offline", "active", "major")
    assert await alarms.sweep() == 0

    await registrations.register(request)  # back: the alarm starts clearing, with hysteresis
    [alarm] = await alarms_of(db, seoul, light)
    assert alarm["status"] == "active" and alarm["clearing_since"] is not None
    clock["now"] += timedelta(minutes=11)
    assert await alarms.sweep() == 1
    [alarm] = await alarms_of(db, seoul, light)
    assert (alarm["status"], alarm["clear_reason"]) == ("cleared", "condition")
    assert recorder.kinds == [ChangeKind.RAISED, ChangeKind.CLEARED]
    await registrations.register(request)  # nothing to do for a device that was not offline
    assert len(await alarms_of(db, seoul, light)) == 1


async def test_decommissioning_clears_the_devices_open_alarms(db):
    seoul = await make_city(db, "seoul")
    [light] = await lights(db, seoul)
    await AlarmService(db).apply([seen(seoul, light, True, 0), seen(seoul, light, True, 0, AlarmType.DAY_BURNER)])
    await DeviceService(db).decommission(seoul.principal, light.id)
    assert {(a["status"], a["clear_reason"]) for a in await alarms_of(db, seoul, light)} == {
        ("cleared", "decommissioned")}


async def test_nodes_raising_the_same_alarms_at_once_make_one_each(db):
    import asyncio

    seoul = await make_city(db, "seoul")
    devices = await lights(db, seoul, 4)
    recorder = Recorder()
    nodes = [AlarmService(db, on_changes=recorder) for _ in range(3)]
    batch = [seen(seoul, d, True, 0) for d in devices]
    await asyncio.gather(*(node.apply(list(reversed(batch)) if i % 2 else batch) for i, node in enumerate(nodes)))
    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        rows = await conn.fetch("select device_id, count, status from alarms")
    assert len(rows) == 4 and {(r["status"], r["count"]) for r in rows} == {("active", 1)}
    assert recorder.kinds == [ChangeKind.RAISED] * 4


async def test_sweeps_on_many_nodes_at_once_raise_one_offline_alarm(db):
    import asyncio

    seoul = await make_city(db, "seoul")
    [light] = await lights(db, seoul)
    async with db.system_tx() as conn:
        await conn.execute("update devices set status = 'offline', offline_since = now() - interval '1 hour'")
    await asyncio.gather(*(AlarmService(db).sweep() for _ in range(4)))
    await AlarmService(db).sweep()
    [alarm] = await alarms_of(db, seoul, light)
    assert (alarm["type"], alarm["count"]) == ("device_offline", 1)


async def test_a_citizen_report_locks_alarms_in_the_order_findings_do(db):
    """Findings lock a device's alarms in id order; a report that locked the most severe one
    first would deadlock with them (one of the two transactions lost). Here the findings' side
    holds the lower id and then takes the higher one, while the report waits."""
    import asyncio

    seoul = await make_city(db, "seoul")
    [light] = await lights(db, seoul)
    await AlarmService(db).apply([seen(seoul, light, True, 0), seen(seoul, light, True, 0, AlarmType.DAY_BURNER)])
    async with db.system_tx() as conn:
        # The lower id gets the lesser severity, so severity order and id order disagree.
        low, high = [r["id"] for r in await conn.fetch("select id from alarms order by id")]
        await conn.execute("update alarms set severity = case when id = $1 then 'warning' else 'critical' end", low)
    async with db.pool.acquire() as findings:
        async with findings.transaction():
            await findings.execute("select 1 from alarms where id = $1 for update", low)

            async def report():
                async with db.system_tx() as conn:
                    return await merge_citizen_report(conn, seoul.tenant_id, light.id, "dark street", T0)

            reporting = asyncio.create_task(report())
            await blocked_by(findings, reporting)
            # With the old order the report would hold `high` now and this would deadlock.
            await findings.execute("select 1 from alarms where id = $1 for update", high)
        assert await reporting == high  # the most severe open alarm takes the report


async def group_settings(db, city, device, settings: dict) -> None:
    """A group of just `device` whose alarm settings override the city's."""
    async with db.tenant_tx(city.tenant_id) as conn:
        group = await conn.fetchval(
            "insert into device_groups (tenant_id, name) values ($1, $2) returning id", city.tenant_id,
            f"group of {device.endpoint}")
        await conn.execute("insert into device_group_members (tenant_id, group_id, device_id) values ($1, $2, $3)",
                           city.tenant_id, group, device.id)
        await conn.execute("insert into alarm_settings (tenant_id, group_id, settings) values ($1, $2, $3)",
                           city.tenant_id, group, settings)


async def test_a_slow_clearing_group_does_not_hold_back_other_clears(db):
    """The sweep takes a batch of the oldest absences: those a group keeps open for a day must
    not fill it, or no alarm anywhere else would clear until they do."""
    seoul = await make_city(db, "seoul")
    slow, fast = await lights(db, seoul, 2)
    await group_settings(db, seoul, slow, {"clear_after_minutes": 1440})
    now = datetime.now(UTC)
    service = AlarmService(db, clock=lambda: now)
    await service.apply([Finding(seoul.tenant_id, slow.id, LAMP, True, now - timedelta(hours=2)),
                         Finding(seoul.tenant_id, slow.id, LAMP, False, now - timedelta(hours=1)),
                         Finding(seoul.tenant_id, fast.id, LAMP, True, now - timedelta(minutes=50)),
                         Finding(seoul.tenant_id, fast.id, LAMP, False, now - timedelta(minutes=30))])
    assert await service.sweep(batch=1) == 1
    assert (await alarms_of(db, seoul, fast))[0]["status"] == "cleared"
    assert (await alarms_of(db, seoul, slow))[0]["status"] == "active"


async def test_a_long_grace_group_does_not_hold_back_other_offline_alarms(db):
    seoul = await make_city(db, "seoul")
    patient, prompt = await lights(db, seoul, 2)
    await group_settings(db, seoul, patient, {"offline_grace_minutes": 1440})
    async with db.system_tx() as conn:
        await conn.execute("update devices set status = 'offline', offline_since = now() - case when id = $1"
                           " then interval '2 hours' else interval '1 hour' end", patient.id)
    assert await AlarmService(db).sweep(batch=1) == 1
    assert [a["type"] for a in await alarms_of(db, seoul, prompt)] == ["device_offline"]
    assert await alarms_of(db, seoul, patient) == []


async def test_a_fault_in_the_offline_alarm_never_refuses_the_devices_registration(db):
    from fleet.registrations.models import RegisterRequest
    from fleet.registrations.service import RegistrationService

    seoul = await make_city(db, "seoul")
    [light] = await lights(db, seoul)
    failing = {"on": False}

    async def work_orders(conn, changes) -> None:
        if failing["on"]:
            raise RuntimeError("a bug in what hears of alarms")

    alarms = AlarmService(db, on_changes=work_orders)
    registrations = RegistrationService(db, "test", alarm_service=alarms)
    request = RegisterRequest(light.endpoint, "127.0.0.1", 5683, 1, "U", "1.1", "</3/0>")
    async with db.system_tx() as conn:
        await conn.execute("update devices set status = 'offline', offline_since = now() - interval '1 hour'")
    await alarms.sweep()
    [alarm] = await alarms_of(db, seoul, light)
    async with db.system_tx() as conn:  # a crew's work order closed it: the device's return proves it
        await clear_for_work_order(conn, seoul.tenant_id, [alarm["id"]], "crew", datetime.now(UTC))
    failing["on"] = True
    registration = await registrations.register(request)  # stands, though the proof's hearer failed
    assert registration.device_id == light.id
    async with db.system_tx() as conn:
        device = await conn.fetchrow("select status, offline_since from devices where id = $1", light.id)
    assert device["status"] == "online" and device["offline_since"] is not None  # undone, to try again
    assert (await alarms_of(db, seoul, light))[0]["verified_at"] is None
    failing["on"] = False
    await registrations.register(request)
    assert (await alarms_of(db, seoul, light))[0]["verified_at"] is not None


async def test_a_shelving_time_without_offset_is_the_citys_wall_clock(db):
    from zoneinfo import ZoneInfo

    from fleet.alarms.models import Shelve

    seoul = await make_city(db, "seoul")  # Asia/Seoul, nine hours ahead of UTC
    [light] = await lights(db, seoul)
    service = AlarmService(db)
    await service.apply([seen(seoul, light, True, 0)])
    [alarm] = await alarms_of(db, seoul, light)
    wall_clock = (datetime.now(ZoneInfo("Asia/Seoul")) + timedelta(hours=3)).replace(tzinfo=None, microsecond=0)
    shelved = await service.shelve(seoul.principal, alarm["id"], Shelve(until=wall_clock))
    assert shelved.shelved_until == wall_clock.replace(tzinfo=ZoneInfo("Asia/Seoul"))
