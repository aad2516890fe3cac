"""The scheduler's reconcile against PostgreSQL with fixed clocks: levels, idempotence, catch-up,
assignment precedence, overrides, 3311 lights, redelivery after expiry, fencing."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from fleet.lighting.reconcile import Reconciler
from fleet.lighting.service import LightingService
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.access.service import TenantService
from fleet.scheduling.leader import Leadership, NotLeader
from tests.conftest import make_city

KST = ZoneInfo("Asia/Seoul")
EVENING = {"name": "evening", "switch_points": [
    {"id": "on", "anchor": "local_time", "local_time": "18:00", "dimming_level": 100},
    {"id": "dim", "anchor": "local_time", "local_time": "23:00", "dimming_level": 50},
    {"id": "off", "anchor": "local_time", "local_time": "06:00", "dimming_level": 0}]}
QUIET = {"name": "quiet", "switch_points": [
    {"id": "on", "anchor": "local_time", "local_time": "18:00", "dimming_level": 30},
    {"id": "off", "anchor": "local_time", "local_time": "06:00", "dimming_level": 0}]}


def kst(*fields: int) -> dt.datetime:
    return dt.datetime(*fields, tzinfo=KST)


class Setup:
    def __init__(self, db, city, now: dt.datetime) -> None:
        self.db, self.city, self.now = db, city, now
        self.lighting = LightingService(db, clock=lambda: self.now)
        self.devices = DeviceService(db)

    async def lights(self, count: int, district: str = "Jung-gu", prefix: str = "l") -> list:
        return [await self.devices.create_validated(self.city.principal, NewDevice(
            DeviceKind.STREETLIGHT, f"{prefix}-{district}-{n}", 37.56 + n * 1e-4, 126.97, district=district,
            attributes={"nominal_wattage": 90})) for n in range(count)]

    async def calendar(self, program: dict, name: str = "city"):
        made = await self.lighting.create_program(self.city.principal, program | {"name": f"{name}-program"})
        return await self.lighting.create_calendar(self.city.principal, {
            "name": name, "default_program_id": str(made.id)})

    async def tenant(self):
        return await TenantService(self.db).by_slug(self.city.slug)

    async def commands(self) -> list:
        async with self.db.system_tx() as conn:
            return await conn.fetch(
                """select c.device_id, c.path, c.value, c.status, b.origin, c.expires_at
                   from commands c join command_batches b on b.id = c.batch_id order by c.created_at""")


@pytest.fixture
async def setup(db) -> Setup:
    return Setup(db, await make_city(db, "seoul"), kst(2026, 12, 24, 19))


async def reconcile(setup: Setup, at: dt.datetime, **options):
    return await Reconciler(setup.db, **options).reconcile_tenant(await setup.tenant(), at)


async def test_levels_are_commanded_once_and_catch_up_after_a_pause(setup):
    lamps = await setup.lights(3)
    unscheduled = await setup.lights(2, district="Mapo-gu")
    calendar = await setup.calendar(EVENING)
    await setup.lighting.assign(setup.city.principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})

    first = await reconcile(setup, kst(2026, 12, 24, 19))
    assert (first.scheduled_lights, first.commanded, len(first.batch_ids)) == (3, 3, 1)
    assert first.next_transition_at == kst(2026, 12, 24, 23)
    commands = await setup.commands()
    assert {(c["device_id"], c["path"], c["value"], c["origin"]) for c in commands} == {
        (lamp.id, "/3416/0/1", 100, "lighting") for lamp in lamps}
    assert not {c["device_id"] for c in commands} & {lamp.id for lamp in unscheduled}

    # Idempotent: the same instant, or later in the same stretch, commands nothing.
    for at in (kst(2026, 12, 24, 19), kst(2026, 12, 24, 22, 59)):
        again = await reconcile(setup, at)
        assert again.commanded == 0 and again.batch_ids == []
    # "Down" from 22:00 to 07:00: the catch-up sends only the level due now, once.
    caught_up = await reconcile(setup, kst(2026, 12, 25, 7))
    assert caught_up.commanded == 3
    values = [c["value"] for c in await setup.commands()]
    assert values == [100] * 3 + [0] * 3
    assert (await reconcile(setup, kst(2026, 12, 25, 8))).commanded == 0


async def test_commands_live_until_the_next_transition(setup):
    await setup.lights(1)
    calendar = await setup.calendar(EVENING)
    await setup.lighting.assign(setup.city.principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    before = dt.datetime.now(dt.UTC)
    await reconcile(setup, kst(2026, 12, 24, 19))
    (command,) = await setup.commands()
    lifetime = command["expires_at"] - before
    assert dt.timedelta(hours=3, minutes=59) < lifetime < dt.timedelta(hours=4, minutes=1)


async def test_most_specific_assignment_wins(setup):
    lamps = await setup.lights(4)
    district_calendar = await setup.calendar(EVENING, "district")
    group_calendar = await setup.calendar(QUIET, "group")
    small_calendar = await setup.calendar(QUIET | {"switch_points": [
        {"anchor": "local_time", "local_time": "18:00", "dimming_level": 70},
        {"anchor": "local_time", "local_time": "06:00", "dimming_level": 0}]}, "small")
    principal = setup.city.principal
    from fleet.groups.service import GroupService
    groups = GroupService(setup.db)
    big = await groups.create(principal, {"name": "big", "device_ids": [lamp.id for lamp in lamps[1:]]})
    small = await groups.create(principal, {"name": "small", "device_ids": [lamps[3].id]})
    await setup.lighting.assign(principal, {"calendar_id": str(district_calendar.id), "district": "Jung-gu"})
    await setup.lighting.assign(principal, {"calendar_id": str(small_calendar.id), "group_id": str(small.id)})
    await setup.lighting.assign(principal, {"calendar_id": str(group_calendar.id), "group_id": str(big.id)})

    await reconcile(setup, kst(2026, 12, 24, 19))
    levels = {c["device_id"]: c["value"] for c in await setup.commands()}
    # District only; the big group (over the district); the small group (over the big one).
    assert [levels[lamp.id] for lamp in lamps] == [100, 30, 30, 70]


async def test_overrides_win_then_the_calendar_resumes(setup):
    lamps = await setup.lights(2)
    calendar = await setup.calendar(EVENING)
    principal = setup.city.principal
    await setup.lighting.assign(principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    await reconcile(setup, kst(2026, 12, 24, 19))

    setup.now = kst(2026, 12, 24, 20)
    await setup.lighting.create_override(principal, {
        "scope": {"district": "Jung-gu"}, "dimming_level": 60, "duration_s": 7200})
    setup.now = kst(2026, 12, 24, 20, 30)
    newer = await setup.lighting.create_override(principal, {
        "scope": {"device_ids": [str(lamps[0].id)]}, "dimming_level": 20, "duration_s": 600})
    # The newest override of the highest priority wins; a higher priority beats it.
    await setup.lighting.create_override(principal, {
        "scope": {"device_ids": [str(lamps[1].id)]}, "dimming_level": 10, "priority": -1, "duration_s": 600})

    report = await reconcile(setup, kst(2026, 12, 24, 20, 31))
    assert report.next_transition_at == kst(2026, 12, 24, 20, 40)
    assert [c["value"] for c in (await setup.commands())[2:]] in ([20, 60], [60, 20])
    latest = {c["device_id"]: c["value"] for c in await setup.commands()}
    assert (latest[lamps[0].id], latest[lamps[1].id]) == (20, 60)

    await setup.lighting.cancel_override(principal, newer.id)
    await reconcile(setup, kst(2026, 12, 24, 20, 32))
    latest = {c["device_id"]: c["value"] for c in await setup.commands()}
    assert (latest[lamps[0].id], latest[lamps[1].id]) == (60, 60)
    # After two hours the calendar resumes at the level its last switch point set.
    await reconcile(setup, kst(2026, 12, 24, 22, 0, 1))
    latest = {c["device_id"]: c["value"] for c in await setup.commands()}
    assert (latest[lamps[0].id], latest[lamps[1].id]) == (100, 100)
    assert len(await setup.commands()) == 2 + 2 + 1 + 2


async def test_lights_with_light_control_get_the_dimmer(setup):
    lamp, plain = await setup.lights(2)
    async with setup.db.system_tx() as conn:
        await conn.executemany(
            """insert into registrations (id, device_id, tenant_id, endpoint, address, port, lifetime_s, binding,
                                          lwm2m_version, object_links, node, expires_at)
               values ($1, $2, $3, $1, '127.0.0.1', 5683, 300, 'U', '1.1', $4, 'n', now() + interval '1 hour')""",
            [(f"r{n}", device.id, setup.city.tenant_id, links) for n, (device, links) in enumerate(
                [(lamp, "</1/0>,</3/0>,</3311/0>"), (plain, "</1/0>,</3/0>,</3416/0>")])])
    calendar = await setup.calendar(EVENING)
    await setup.lighting.assign(setup.city.principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    await reconcile(setup, kst(2026, 12, 24, 19))
    paths = {c["device_id"]: (c["path"], c["value"]) for c in await setup.commands()}
    assert paths == {lamp.id: ("/3311/0/5851", 100), plain.id: ("/3416/0/1", 100)}


async def test_an_expired_level_is_sent_again_once_the_light_is_heard_from(setup):
    (lamp,) = await setup.lights(1)
    async with setup.db.system_tx() as conn:
        await conn.execute(
            """insert into registrations (id, device_id, tenant_id, endpoint, address, port, lifetime_s, binding,
                                          queue_mode, lwm2m_version, object_links, node, expires_at)
               values ('r', $1, $2, 'e', '127.0.0.1', 5683, 300, 'UQ', true, '1.1', '</3416/0>', 'n',
                       now() + interval '1 hour')""", lamp.id, setup.city.tenant_id)
    calendar = await setup.calendar(EVENING)
    await setup.lighting.assign(setup.city.principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    await reconcile(setup, kst(2026, 12, 24, 19))
    async with setup.db.system_tx() as conn:
        await conn.execute("update commands set status = 'expired', completed_at = now() - interval '1 second'")
    # Still away: nothing new.
    async with setup.db.system_tx() as conn:
        await conn.execute("update registrations set updated_at = now() - interval '1 minute'")
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 5))).commanded == 0
    async with setup.db.system_tx() as conn:
        await conn.execute("update registrations set updated_at = now()")
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 6))).commanded == 1
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 7))).commanded == 0
    assert [c["status"] for c in await setup.commands()] == ["expired", "queued"]


async def test_concurrent_runs_never_command_twice(setup):
    await setup.lights(20)
    calendar = await setup.calendar(EVENING)
    await setup.lighting.assign(setup.city.principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    reports = await asyncio.gather(*(reconcile(setup, kst(2026, 12, 24, 19)) for _ in range(4)))
    assert sorted(r.commanded for r in reports) == [0, 0, 0, 20]
    assert len(await setup.commands()) == 20


async def test_a_deposed_leader_commits_nothing(setup):
    await setup.lights(2)
    calendar = await setup.calendar(EVENING)
    await setup.lighting.assign(setup.city.principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    async with setup.db.system_tx() as conn:
        epoch = await conn.fetchval("update scheduler_leadership set epoch = epoch + 1 returning epoch")
        stale = Leadership("old", epoch - 1, conn)
        current = Leadership("new", epoch, conn)
    with pytest.raises(NotLeader):
        await Reconciler(setup.db).reconcile_tenant(await setup.tenant(), kst(2026, 12, 24, 19), stale.fence)
    assert await setup.commands() == []
    report = await Reconciler(setup.db).reconcile_tenant(await setup.tenant(), kst(2026, 12, 24, 19), current.fence)
    assert report.commanded == 2


async def test_a_run_commits_in_chunks_and_one_cut_short_is_finished_by_the_next(setup, monkeypatch):
    from fleet.lighting import reconcile as module
    monkeypatch.setattr(module, "COMMIT_LIGHTS", 2)
    lamps = await setup.lights(5)
    calendar = await setup.calendar(EVENING)
    await setup.lighting.assign(setup.city.principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    async with setup.db.system_tx() as conn:
        epoch = await conn.fetchval("select epoch from scheduler_leadership")
    leadership = Leadership("a", epoch, None)
    fences = 0

    async def deposed_after_the_first_chunk(conn) -> None:
        nonlocal fences
        fences += 1
        if fences == 3:  # the decision, the first chunk, then the second: deposed meanwhile
            raise NotLeader("deposed")
        await leadership.fence(conn)

    with pytest.raises(NotLeader):
        await Reconciler(setup.db).reconcile_tenant(await setup.tenant(), kst(2026, 12, 24, 19),
                                                    deposed_after_the_first_chunk)
    first = await setup.commands()
    assert len(first) == 2
    async with setup.db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from lighting_targets") == 2
    # The next run (the next leader's catch-up) does the other three, in two chunks.
    report = await reconcile(setup, kst(2026, 12, 24, 19, 1))
    assert (report.commanded, len(report.batch_ids)) == (3, 2)
    assert sorted(c["device_id"] for c in await setup.commands()) == sorted(lamp.id for lamp in lamps)
    # The city's lock went with the run: another run takes it at once.
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 2))).commanded == 0


SUN = {"name": "sun", "switch_points": [
    {"id": "dusk", "anchor": "sunset", "offset_minutes": 15, "dimming_level": 100},
    {"id": "dawn", "anchor": "sunrise", "offset_minutes": -15, "dimming_level": 0}]}


@pytest.mark.parametrize(("at", "level", "next_within_two_days"), [
    (dt.datetime(2026, 6, 21, 23, 30), 0, False),  # midnight sun: off, and nothing due for days
    (dt.datetime(2026, 12, 21, 20, 0), 100, True),  # polar night: lit, off only in civil twilight
    (dt.datetime(2026, 3, 29, 2, 30), 100, True),  # in the hour Oslo's clocks skip
])
async def test_high_latitude_and_dst_through_the_scheduler(db, at, level, next_within_two_days):
    city = await make_city(db, "tromso", timezone="Europe/Oslo")
    setup = Setup(db, city, at.replace(tzinfo=ZoneInfo("Europe/Oslo")))
    (lamp,) = [await setup.devices.create_validated(city.principal, NewDevice(
        DeviceKind.STREETLIGHT, "storgata-1", 69.6496, 18.9560, district="Sentrum"))]
    calendar = await setup.calendar(SUN)
    await setup.lighting.assign(city.principal, {"calendar_id": str(calendar.id), "district": "Sentrum"})
    report = await reconcile(setup, setup.now)
    (command,) = await setup.commands()
    assert (command["device_id"], command["value"]) == (lamp.id, level)
    assert (report.next_transition_at is not None) == next_within_two_days
    if not next_within_two_days:  # the command then lives a day; the scheduler looks again each minute
        assert command["expires_at"] - dt.datetime.now(dt.UTC) > dt.timedelta(hours=23)


async def _register(setup: Setup, lamps, *, links: str = "</1/0>,</3/0>,</3416/0>") -> None:
    async with setup.db.system_tx() as conn:
        await conn.executemany(
            """insert into registrations (id, device_id, tenant_id, endpoint, address, port, lifetime_s, binding,
                                          lwm2m_version, object_links, node, expires_at, registered_at)
               values ($1, $2, $3, $1, '127.0.0.1', 5683, 300, 'U', '1.1', $4, 'n', now() + interval '1 hour',
                       now() - interval '1 hour')""",
            [(f"r-{lamp.id}", lamp.id, setup.city.tenant_id, links) for lamp in lamps])


async def _reported(setup: Setup, lamp, path: str, level: float, ago: dt.timedelta = dt.timedelta(0)) -> None:
    async with setup.db.system_tx() as conn:
        await conn.execute(
            """insert into device_state (device_id, path, tenant_id, time, v_num, updated_at)
               values ($1, $2, $3, now() - $5::interval, $4, now() - $5::interval)
               on conflict (device_id, path) do update set v_num = excluded.v_num, time = excluded.time,
                                                       updated_at = excluded.updated_at""",
            lamp.id, path, setup.city.tenant_id, level, ago)


async def _complete_all(setup: Setup, ago: dt.timedelta) -> None:
    async with setup.db.system_tx() as conn:
        await conn.execute("update commands set status = 'succeeded', completed_at = now() - $1::interval "
                           "where status = 'queued'", ago)


async def test_an_override_lights_lights_without_a_calendar_then_gives_back_their_level(setup):
    known, unknown = await setup.lights(2, district="Mapo-gu")
    await _reported(setup, known, "/3416/0/3", 30)
    principal = setup.city.principal
    setup.now = kst(2026, 12, 24, 20)
    await setup.lighting.create_override(principal, {
        "scope": {"district": "Mapo-gu"}, "dimming_level": 100, "duration_s": 7200, "reason": "fire"})

    report = await reconcile(setup, kst(2026, 12, 24, 20, 1))
    assert (report.scheduled_lights, report.commanded) == (2, 2)
    assert report.next_transition_at == kst(2026, 12, 24, 22)
    assert {(c["device_id"], c["value"]) for c in await setup.commands()} == {(known.id, 100), (unknown.id, 100)}
    assert (await reconcile(setup, kst(2026, 12, 24, 21))).commanded == 0
    # A report taken under the override does not become the level to go back to.
    await _reported(setup, known, "/3416/0/3", 100)
    assert (await reconcile(setup, kst(2026, 12, 24, 21, 30))).commanded == 0

    # The override ends: the light whose level was known gets it back; the other stays lit,
    # and neither is the scheduler's any more.
    ended = await reconcile(setup, kst(2026, 12, 24, 22, 0, 1))
    assert ended.commanded == 1
    assert [(c["device_id"], c["value"]) for c in await setup.commands()][2:] == [(known.id, 30)]
    async with setup.db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from lighting_targets") == 0
    assert (await reconcile(setup, kst(2026, 12, 24, 23))).commanded == 0


async def test_a_cancelled_override_gives_back_the_level_of_lights_without_a_calendar(setup):
    (lamp,) = await setup.lights(1, district="Mapo-gu")
    await _register(setup, [lamp], links="</1/0>,</3/0>,</3311/0>")
    await _reported(setup, lamp, "/3311/0/5851", 45)
    principal = setup.city.principal
    setup.now = kst(2026, 12, 24, 20)
    made = await setup.lighting.create_override(principal, {
        "scope": {"device_ids": [str(lamp.id)]}, "dimming_level": 0, "duration_s": 3600})
    await reconcile(setup, kst(2026, 12, 24, 20, 1))
    await setup.lighting.cancel_override(principal, made.id)
    await reconcile(setup, kst(2026, 12, 24, 20, 2))
    assert [(c["path"], c["value"]) for c in await setup.commands()] == [("/3311/0/5851", 0), ("/3311/0/5851", 45)]


async def test_a_light_gets_a_calendar_while_an_override_holds_it(setup):
    (lamp,) = await setup.lights(1)
    await _reported(setup, lamp, "/3416/0/3", 30)
    principal = setup.city.principal
    setup.now = kst(2026, 12, 24, 20)
    await setup.lighting.create_override(principal, {
        "scope": {"district": "Jung-gu"}, "dimming_level": 70, "duration_s": 3600})
    await reconcile(setup, kst(2026, 12, 24, 20, 1))
    calendar = await setup.calendar(EVENING)
    await setup.lighting.assign(principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    assert (await reconcile(setup, kst(2026, 12, 24, 20, 2))).commanded == 0  # still the override's 70
    await reconcile(setup, kst(2026, 12, 24, 21, 0, 1))
    assert [c["value"] for c in await setup.commands()] == [70, 100]  # the calendar, not the level before


async def _one_registered_light_commanded(setup: Setup):
    """One registered light on the evening calendar, commanded its 19:00 level."""
    (lamp,) = await setup.lights(1)
    await _register(setup, [lamp])
    calendar = await setup.calendar(EVENING)
    await setup.lighting.assign(setup.city.principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    await reconcile(setup, kst(2026, 12, 24, 19))
    return lamp


async def test_a_restarted_light_gets_its_level_again(setup):
    await _one_registered_light_commanded(setup)
    await _complete_all(setup, dt.timedelta(minutes=2))
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 5))).commanded == 0
    async with setup.db.system_tx() as conn:  # it registered anew: it rebooted
        await conn.execute("update registrations set registered_at = now()")
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 6))).commanded == 1
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 7))).commanded == 0  # once


async def test_a_light_reporting_another_level_is_put_right_at_most_every_quarter_hour(setup):
    lamp = await _one_registered_light_commanded(setup)
    # Acknowledged 20 minutes ago; it reported 100 then (fine), and now reports 0.
    await _complete_all(setup, dt.timedelta(minutes=20))
    await _reported(setup, lamp, "/3416/0/3", 100)
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 20))).commanded == 0
    await _reported(setup, lamp, "/3416/0/3", 0)
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 21))).commanded == 1
    # Taken again a minute ago, still 0 (a failed lamp): no new command for a quarter of an hour.
    await _complete_all(setup, dt.timedelta(minutes=1))
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 22))).commanded == 0
    await _reported(setup, lamp, "/3416/0/3", 0, ago=dt.timedelta(seconds=50))
    assert (await reconcile(setup, kst(2026, 12, 24, 19, 23))).commanded == 0
