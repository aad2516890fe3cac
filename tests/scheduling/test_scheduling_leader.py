"""Leadership: one node schedules; killing its lock connection hands over within seconds and no
light is commanded twice; every run is idempotent."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

from fleet.lighting.service import LightingService
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import make_city
from tests.scheduling.conftest import eventually, scheduler_node

KST = ZoneInfo("Asia/Seoul")
EVENING = {"name": "evening", "switch_points": [
    {"anchor": "local_time", "local_time": "18:00", "dimming_level": 100},
    {"anchor": "local_time", "local_time": "23:00", "dimming_level": 50},
    {"anchor": "local_time", "local_time": "06:00", "dimming_level": 0}]}


async def schedule_city(db, now, lights: int = 5):
    city = await make_city(db, "seoul")
    for n in range(lights):
        await DeviceService(db).create_validated(city.principal, NewDevice(
            DeviceKind.STREETLIGHT, f"light-{n}", 37.56, 126.97 + n * 1e-4, district="Jung-gu"))
    lighting = LightingService(db, clock=lambda: now[0])
    program = await lighting.create_program(city.principal, EVENING)
    calendar = await lighting.create_calendar(city.principal, {"name": "city", "default_program_id": str(program.id)})
    await lighting.assign(city.principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    return city, lighting


async def commands_per_device(db) -> dict:
    async with db.system_tx() as conn:
        rows = await conn.fetch("select device_id, array_agg(value order by created_at) as values "
                                "from commands group by device_id")
    return {r["device_id"]: r["values"] for r in rows}


async def test_one_leader_and_a_hand_over_without_duplicates(db, database_dsn):
    now = [dt.datetime(2026, 12, 24, 19, tzinfo=KST)]
    city, lighting = await schedule_city(db, now)
    async with scheduler_node(database_dsn, "a", lambda: now[0]) as a:
        await eventually(lambda: a.jobs.runs >= 1)
        assert a.leading
        first = await commands_per_device(db)
        assert len(first) == 5 and all(values == [100] for values in first.values())

        async with scheduler_node(database_dsn, "b", lambda: now[0]) as b:
            await asyncio.sleep(0.6)  # several of b's attempts
            assert not b.leading and b.jobs.runs == 0

            await a.kill_lock_connection(db)
            # Within seconds (b retries every 0.2 s here); the bound only keeps a hang from passing.
            await eventually(lambda: b.leading and b.jobs.runs >= 1, timeout_s=15)
            await eventually(lambda: not a.leading)
            # b's catch-up found every light at its level already.
            assert await commands_per_device(db) == first
            async with db.system_tx() as conn:
                assert await conn.fetchval("select node from scheduler_leadership") == "b"

            # A change reaches the new leader by NOTIFY, not at its next minute (interval_s is
            # far beyond the wait here).
            await lighting.create_override(city.principal, {
                "scope": {"district": "Jung-gu"}, "dimming_level": 70, "duration_s": 3600})

            async def overridden():
                values = await commands_per_device(db)
                return all(v == [100, 70] for v in values.values()) and values
            await eventually(overridden, timeout_s=15)
            await asyncio.sleep(0.5)
            assert a.jobs.runs == 1 and not a.leading

    # Exactly one command per light per level: no duplicates across the hand-over.
    assert all(values == [100, 70] for values in (await commands_per_device(db)).values())


async def test_a_cancelled_leader_lets_go_at_once(db, database_dsn):
    now = [dt.datetime(2026, 12, 24, 19, tzinfo=KST)]
    await schedule_city(db, now, lights=2)
    async with scheduler_node(database_dsn, "a", lambda: now[0]) as a:
        await eventually(lambda: a.leading)
        async with scheduler_node(database_dsn, "b", lambda: now[0]) as b:
            a.task.cancel()
            await eventually(lambda: b.leading and b.jobs.runs >= 1, timeout_s=15)
    async with db.system_tx() as conn:
        # Leadership epochs: a's, then b's.
        assert await conn.fetchval("select epoch from scheduler_leadership") == 2
        assert await conn.fetchval("select count(*) from commands") == 2


async def test_the_next_transition_fires_on_time(db, database_dsn):
    """The date job at the next transition: the clock stands 1.5 s before 23:00 in Seoul."""
    target = dt.datetime(2026, 12, 24, 22, 59, 58, 500_000, tzinfo=KST)
    shift = target - dt.datetime.now(dt.UTC)
    now = [target]
    await schedule_city(db, now, lights=3)
    async with scheduler_node(database_dsn, "a", lambda: dt.datetime.now(dt.UTC) + shift, interval_s=3600) as a:
        await eventually(lambda: a.jobs.runs >= 1)
        assert all(v == [100] for v in (await commands_per_device(db)).values())

        async def dimmed():
            values = await commands_per_device(db)
            return all(v == [100, 50] for v in values.values()) and values
        # The minute job is an hour away: only the date job at 23:00 can have dimmed them.
        await eventually(dimmed, timeout_s=15)
        fired_at = dt.datetime.now(dt.UTC) + shift
        assert fired_at >= dt.datetime(2026, 12, 24, 23, tzinfo=KST)
        # The run counts itself once its last commit is in and the city's lock released.
        await eventually(lambda: a.jobs.runs >= 2)
        await asyncio.sleep(0.3)
        assert a.jobs.runs == 2
