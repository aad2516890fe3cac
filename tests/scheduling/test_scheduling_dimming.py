"""Dimming end to end on real UDP: the scheduler's commands reach simulated streetlights at their
transition, queue-mode lights get theirs on their next update, a silent light's command expires."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from zoneinfo import ZoneInfo

from fleet.access.service import TenantService
from fleet.lighting.reconcile import Reconciler
from fleet.lighting.service import LightingService
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from simulators.simulation import Simulation, SimulationConfig
from tests.conftest import make_city
from tests.protocols.devices import MiniDevice
from tests.scheduling.conftest import eventually, scheduler_node

KST = ZoneInfo("Asia/Seoul")
LIGHTS = 200
EVENING = {"name": "evening", "switch_points": [
    {"anchor": "local_time", "local_time": "18:00", "dimming_level": 100},
    {"anchor": "local_time", "local_time": "23:00", "dimming_level": 50},
    {"anchor": "local_time", "local_time": "06:00", "dimming_level": 0}]}
ALWAYS_40 = {"name": "always", "switch_points": [{"anchor": "local_time", "local_time": "12:00", "dimming_level": 40}]}


@contextlib.asynccontextmanager
async def simulated(config: SimulationConfig):
    simulation = Simulation(config, out=None)
    task = asyncio.create_task(simulation.run())
    ready = asyncio.create_task(simulation.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    try:
        yield simulation
    finally:
        simulation.stop()
        await task


async def counts_by_value(db) -> dict[tuple[int, str], int]:
    async with db.system_tx() as conn:
        rows = await conn.fetch("select (value #>> '{}')::int as level, status, count(*) as n "
                                "from commands group by 1, 2")
    return {(r["level"], r["status"]): r["n"] for r in rows}


async def test_a_group_of_200_simulated_lights_moves_at_its_transition(db, listener, city_factory, api_url,
                                                                       database_dsn):
    city = await city_factory("seoul")
    config = SimulationConfig(counts={"streetlight": LIGHTS}, server=f"coap://127.0.0.1:{listener.port}",
                              api=api_url, key=city.key, provision=True, seed=11, speed=1,
                              start=dt.datetime(2026, 11, 24, 21, tzinfo=KST), progress_s=0,
                              register_rate=2000)
    async with simulated(config) as simulation:
        async def registered():
            async with db.system_tx() as conn:
                return await conn.fetchval("select count(*) from registrations") == LIGHTS
        await eventually(registered, timeout_s=20)
        group = (await city.client.post("/api/v1/groups", json={
            "name": "simulated lights", "filter": {"kind": "streetlight", "tag": "simulated"}})).json()
        assert group["member_count"] == LIGHTS
        program = (await city.client.post("/api/v1/lighting/programs", json=EVENING)).json()
        calendar = (await city.client.post("/api/v1/lighting/calendars", json={
            "name": "city", "default_program_id": program["id"]})).json()
        assigned = await city.client.post("/api/v1/lighting/assignments", json={
            "calendar_id": calendar["id"], "group_id": group["id"]})
        assert assigned.status_code == 201, assigned.text

        # The scheduler's clock stands 2 s before 23:00 in Seoul; at 23:00 the group dims to 50 %.
        transition = dt.datetime(2026, 11, 24, 23, tzinfo=KST)
        shift = transition - dt.timedelta(seconds=2) - dt.datetime.now(dt.UTC)
        async with scheduler_node(database_dsn, "a", lambda: dt.datetime.now(dt.UTC) + shift):
            await eventually(lambda: _all(db, 100, "succeeded"), timeout_s=10)
            # On a loaded machine 23:00 may already have come (and 50 % be on its way): the lights
            # show 100 % only while the scheduler's clock still stands before the transition.
            if dt.datetime.now(dt.UTC) + shift < transition:
                assert all(light.output_level() == 100 for light in simulation.devices)
            await eventually(lambda: _all(db, 50, "succeeded"), timeout_s=10)
            committed_at = dt.datetime.now(dt.UTC) + shift
            # At the transition, not before it and not at some later tick; the bound is wide
            # because a loaded machine (8 s seen) is no fault of the scheduler's.
            assert transition <= committed_at < transition + dt.timedelta(seconds=30), committed_at

        counts = await counts_by_value(db)
        assert counts == {(100, "succeeded"): LIGHTS, (50, "succeeded"): LIGHTS}, counts
        assert all(light.output_level() == 50 for light in simulation.devices)

        # The lights obeyed, then reported their new level and power themselves (Send).
        async def reported():
            async with db.system_tx() as conn:
                rows = await conn.fetch(
                    """select d.endpoint, l.v_num as level, p.v_num as watts from devices d
                       join device_state l on l.device_id = d.id and l.path = '/3416/0/3'
                       join device_state p on p.device_id = d.id and p.path = '/3418/0/4'""")
            return len(rows) == LIGHTS and all(r["level"] == 50 for r in rows) and rows
        rows = await eventually(reported, timeout_s=10)
        for row in rows:
            light = simulation.device(row["endpoint"])
            assert abs(row["watts"] - light.nominal_w * 0.5) <= 0.031 * light.nominal_w * 0.5


async def _all(db, level: int, status: str) -> bool:
    return (await counts_by_value(db)).get((level, status)) == LIGHTS


async def one_light(db, endpoint: str, program: dict):
    city = await make_city(db, "seoul")
    record = await DeviceService(db).create_validated(city.principal, NewDevice(
        DeviceKind.STREETLIGHT, endpoint, 37.56, 126.97, district="Jung-gu"))
    lighting = LightingService(db)
    made = await lighting.create_program(city.principal, program)
    calendar = await lighting.create_calendar(city.principal, {"name": "city", "default_program_id": str(made.id)})
    await lighting.assign(city.principal, {"calendar_id": str(calendar.id), "district": "Jung-gu"})
    return city, record, lighting


async def test_a_queue_mode_light_gets_its_level_on_its_next_update(db, listener):
    city, record, _ = await one_light(db, "sleepy", ALWAYS_40)
    device = MiniDevice("sleepy")
    device.add("/3416/0/1", 100)
    await device.start()
    try:
        assert (await device.register(listener.port, binding="UQ")).code.is_successful()
        tenant = await TenantService(db).by_slug("seoul")
        report = await Reconciler(db).reconcile_tenant(tenant, dt.datetime.now(dt.UTC))
        assert report.commanded == 1
        await asyncio.sleep(1.2)
        assert device.writes == []  # asleep: nothing is sent until it wakes
        assert (await device.update(listener.port)).code.is_successful()
        await eventually(lambda: device.writes == [("/3416/0/1", 40)], timeout_s=5)
        async def committed():
            return await counts_by_value(db) == {(40, "succeeded"): 1}
        await eventually(committed, timeout_s=5)
    finally:
        await device.stop()


async def test_a_lighting_command_to_a_silent_light_expires(db, listener):
    city, record, lighting = await one_light(db, "gone", ALWAYS_40)
    device = MiniDevice("gone")
    device.add("/3416/0/1", 100)
    await device.start()
    assert (await device.register(listener.port, binding="UQ")).code.is_successful()
    await device.stop()  # never heard from again
    # An event lights the district for two seconds; that command lives until the override ends.
    await lighting.create_override(city.principal, {"scope": {"district": "Jung-gu"}, "dimming_level": 90,
                                                     "duration_s": 2})
    tenant = await TenantService(db).by_slug("seoul")
    reconciler = Reconciler(db, min_command_expiry=dt.timedelta(seconds=1))
    started = time.monotonic()
    assert (await reconciler.reconcile_tenant(tenant, dt.datetime.now(dt.UTC))).commanded == 1
    await asyncio.sleep(max(0.0, 2.2 - (time.monotonic() - started)))
    await listener.dispatcher.queue.housekeeping()
    assert await counts_by_value(db) == {(90, "expired"): 1}
    # After the override the calendar resumes; the light is still silent, so that one waits.
    assert (await reconciler.reconcile_tenant(tenant, dt.datetime.now(dt.UTC))).commanded == 1
    assert await counts_by_value(db) == {(90, "expired"): 1, (40, "queued"): 1}
