"""Commands end to end on real UDP: write, read, observe, queue mode, expiry, tenant wall."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from fleet.registry.models import DeviceKind, DeviceFilter, NewDevice
from fleet.registry.service import DeviceService
from protocols.lwm2m.listener import open_listener
from tests.conftest import make_city
from tests.protocols.devices import MiniDevice, Resource


async def light(db, city, endpoint: str, district: str = "Jung-gu"):
    return await DeviceService(db).create_validated(city.principal, NewDevice(
        kind=DeviceKind.STREETLIGHT, endpoint=endpoint, lat=37.56, lon=126.97, district=district))


async def wait_for_batch(db, city, batch_id, done=lambda counts: counts["queued"] == counts["sent"] == 0,
                         timeout: float = 15.0):
    service = CommandService(db)
    for _ in range(int(timeout / 0.1)):
        batch = await service.get(city.principal, batch_id)
        if done(batch.counts):
            return batch
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch still {batch.counts}")


async def test_write_reaches_device_and_state(db, listener):
    city = await make_city(db, "seoul")
    devices = []
    for n in range(3):
        await light(db, city, f"light-{n}")
        device = MiniDevice(f"light-{n}")
        device.add("/3416/0/1", 100)
        await device.start()
        assert (await device.register(listener.port)).code.is_successful()
        devices.append(device)
    try:
        batch = await CommandService(db).submit(city.principal, CommandRequest(
            Target(filter=DeviceFilter(kind=DeviceKind.STREETLIGHT)), Operation.WRITE, "/3416/0/1", 30))
        assert batch.device_count == 3
        batch = await wait_for_batch(db, city, batch.id)
        assert batch.counts["succeeded"] == 3, batch.counts
        assert all(d.writes == [("/3416/0/1", 30)] for d in devices)
        async with db.system_tx() as conn:
            levels = await conn.fetch("select v_num from device_state where path = '/3416/0/1'")
        assert [r["v_num"] for r in levels] == [30.0] * 3
    finally:
        for device in devices:
            await device.stop()


async def test_queue_mode_device_gets_command_on_update(db, listener):
    city = await make_city(db, "seoul")
    record = await light(db, city, "sleepy")
    device = MiniDevice("sleepy")
    device.add("/3416/0/1", 100)
    await device.start()
    try:
        assert (await device.register(listener.port, binding="UQ")).code.is_successful()
        batch = await CommandService(db).submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.WRITE, "/3416/0/1", 55))
        await asyncio.sleep(1.5)
        assert device.writes == []  # asleep: nothing is sent until it wakes
        assert (await device.update(listener.port)).code.is_successful()
        batch = await wait_for_batch(db, city, batch.id)
        assert batch.counts["succeeded"] == 1 and device.writes == [("/3416/0/1", 55)]
    finally:
        await device.stop()


async def test_command_to_silent_device_expires(db, listener):
    city = await make_city(db, "seoul")
    record = await light(db, city, "gone")
    device = MiniDevice("gone")
    device.add("/3416/0/1", 100)
    await device.start()
    assert (await device.register(listener.port, binding="UQ")).code.is_successful()
    await device.stop()  # never wakes up again
    batch = await CommandService(db).submit(city.principal, CommandRequest(
        Target(device_ids=(record.id,)), Operation.WRITE, "/3416/0/1", 10, expires_in=timedelta(seconds=1)))
    await asyncio.sleep(1.2)
    await listener.dispatcher.queue.housekeeping()
    batch = await CommandService(db).get(city.principal, batch.id)
    assert batch.counts["expired"] == 1, batch.counts


async def test_read_and_observe_feed_telemetry(db, listener):
    city = await make_city(db, "seoul")
    record = await light(db, city, "watched")
    device = MiniDevice("watched")
    device.add("/3416/0/1", 70)
    await device.start()
    try:
        assert (await device.register(listener.port)).code.is_successful()
        service = CommandService(db)
        read = await service.submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.READ, "/3416/0/1"))
        read = await wait_for_batch(db, city, read.id)
        assert read.counts["succeeded"] == 1
        assert read.commands[0].result == {"readings": [{"path": "/3416/0/1", "value": 70}]}
        observe = await service.submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.OBSERVE, "/3416/0/1"))
        await wait_for_batch(db, city, observe.id)
        device.resources["/3416/0/1"].value = 12
        device.resources["/3416/0/1"].updated_state()
        for _ in range(50):
            async with db.system_tx() as conn:
                level = await conn.fetchval(
                    "select v_num from device_state where device_id = $1 and path = '/3416/0/1'", record.id)
            if level == 12:
                break
            await asyncio.sleep(0.1)
        assert level == 12
    finally:
        await device.stop()


async def test_invalid_commands_are_refused(db):
    import pytest
    from fleet.errors import ValidationFailed
    city = await make_city(db, "seoul")
    other = await make_city(db, "busan")
    foreign = await light(db, other, "busan-light")
    service = CommandService(db)
    for request in [
        CommandRequest(Target(filter=DeviceFilter()), Operation.WRITE, "/3416/0/1", 150),
        CommandRequest(Target(filter=DeviceFilter()), Operation.WRITE, "/3416/0", 10),
        CommandRequest(Target(filter=DeviceFilter()), Operation.WRITE, "/3/0/0", "x"),
        CommandRequest(Target(filter=DeviceFilter()), Operation.READ, "3/0"),
        CommandRequest(Target(device_ids=(foreign.id,)), Operation.READ, "/3/0"),
    ]:
        with pytest.raises(ValidationFailed):
            await service.submit(city.principal, request)


async def test_a_newer_write_supersedes_a_queued_one(db):
    city = await make_city(db, "seoul")
    lamp = await DeviceService(db).create_validated(city.principal, NewDevice(
        DeviceKind.STREETLIGHT, "never-registered", 37.5, 126.9))
    commands = CommandService(db)
    write = lambda level: CommandRequest(Target(device_ids=(lamp.id,)), Operation.WRITE, "/3416/0/1", level)  # noqa: E731
    first = await commands.submit(city.principal, write(30))
    await commands.submit(city.principal, CommandRequest(Target(device_ids=(lamp.id,)), Operation.WRITE,
                                                         "/3416/0/4", 80))  # another resource: untouched
    second = await commands.submit(city.principal, write(60))
    first = await commands.get(city.principal, first.id)
    assert first.counts["cancelled"] == 1 and first.commands[0].error == "superseded by a newer write"
    assert (await commands.get(city.principal, second.id)).counts["queued"] == 1
    queued = (await commands.for_device(city.principal, lamp.id, statuses=["queued"])).items
    assert sorted(e.command.path for e in queued) == ["/3416/0/1", "/3416/0/4"]


async def test_batch_insert_returns_each_devices_command_and_allows_an_empty_target(db):
    """Batch, commands and wake-up are one statement: each device's command id comes back, and
    a filter that matches nothing still makes a batch (of none)."""
    from datetime import UTC, datetime

    from fleet.commands.repository import CommandRepository

    city = await make_city(db, "seoul")
    lamps = [await light(db, city, f"light-{n}") for n in range(3)]
    expires = datetime.now(UTC) + timedelta(hours=1)
    async with db.tenant_tx(city.principal.tenant_id) as conn:
        repo = CommandRepository(conn)
        batch_id, ids = await repo.insert_batch_with_ids(
            city.principal.tenant_id, Operation.WRITE, "/3416/0/1", 40, {}, [lamp.id for lamp in lamps],
            None, "test", expires)
        rows = {r["device_id"]: r["id"] for r in await conn.fetch(
            "select device_id, id from commands where batch_id = $1", batch_id)}
        empty_id, none = await repo.insert_batch_with_ids(
            city.principal.tenant_id, Operation.WRITE, "/3416/0/1", 40, {}, [], None, "test", expires)
        assert await conn.fetchval("select device_count from command_batches where id = $1", empty_id) == 0
    assert ids == rows and set(ids) == {lamp.id for lamp in lamps}
    assert none == {}
    assert (await CommandService(db).get(city.principal, empty_id)).counts["queued"] == 0


async def test_dispatcher_claims_again_after_losing_its_connection(db, listener):
    """Whole-queue claims share one held connection; if PostgreSQL drops it, the next claim
    takes a fresh one and the push goes on."""
    city = await make_city(db, "seoul")
    await light(db, city, "light-0")
    device = MiniDevice("light-0")
    device.add("/3416/0/1", 100)
    await device.start()
    try:
        assert (await device.register(listener.port)).code.is_successful()
        service = CommandService(db)

        def write(level: int) -> CommandRequest:
            return CommandRequest(Target(filter=DeviceFilter(kind=DeviceKind.STREETLIGHT)),
                                  Operation.WRITE, "/3416/0/1", level)

        await wait_for_batch(db, city, (await service.submit(city.principal, write(30))).id)
        claimer = listener.dispatcher.queue._claimer
        assert claimer is not None
        async with db.system_tx() as conn:
            assert await conn.fetchval("select pg_terminate_backend($1)", claimer.get_server_pid())
        batch = await wait_for_batch(db, city, (await service.submit(city.principal, write(40))).id)
        assert batch.counts["succeeded"] == 1, batch.counts
        assert device.writes[-1] == ("/3416/0/1", 40)
        assert listener.dispatcher.queue._claimer is not claimer
    finally:
        await device.stop()



class Stalling(Resource):
    """Takes the request and never answers it (a device busy or gone quiet mid-exchange)."""

    async def render_get(self, request):
        await asyncio.Event().wait()


async def test_a_stopping_node_puts_its_unanswered_commands_back_in_the_queue(db):
    """A read cut off by the node stopping is sent again by the next node at once, not after the
    five-minute recovery of a node that died."""
    city = await make_city(db, "seoul")
    record = await light(db, city, "slow-to-answer")
    device = MiniDevice("slow-to-answer")
    device.resources["/3416/0/1"] = Stalling(device, "/3416/0/1", 100)
    device.site.add_resource(("3416", "0", "1"), device.resources["/3416/0/1"])
    await device.start()
    try:
        async with open_listener(db, "::", 0) as running:
            assert (await device.register(running.port)).code.is_successful()
            batch = await CommandService(db).submit(city.principal, CommandRequest(
                Target(device_ids=(record.id,)), Operation.READ, "/3416/0/1"))
            await wait_for_batch(db, city, batch.id, done=lambda counts: counts["sent"] == 1)
        batch = await CommandService(db).get(city.principal, batch.id)
        assert (batch.counts["queued"], batch.counts["sent"]) == (1, 0), batch.counts
    finally:
        await device.stop()
