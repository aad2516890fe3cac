"""Content-format negotiation over real UDP with clients that do not speak SenML CBOR."""

from __future__ import annotations

import asyncio

import pytest

from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from tests.conftest import make_city
from tests.protocols.lwm2m.rawdevice import ACCEPT, CREATED, SENML_JSON, TEXT, TLV, RawDevice
from tests.protocols.test_commands import light, wait_for_batch

IDENTITY = {"/3/0/0": "Acme Lighting", "/3/0/1": "AL-9", "/3/0/2": "SN-0042", "/3/0/3": "2.4.1",
            "/3416/0/1": 70}


async def eventually(check, timeout: float = 10.0):
    for _ in range(int(timeout / 0.05)):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def level_stored(db, device_id, level: int):
    async def check():
        async with db.system_tx() as conn:
            return await conn.fetchval("select v_num from device_state where device_id = $1 "
                                       "and path = '/3416/0/1'", device_id) == level
    await eventually(check)


@pytest.mark.parametrize("speaks", [(SENML_JSON, TLV), (TLV, TEXT)], ids=["senml-json+tlv", "tlv+text"])
async def test_a_client_without_senml_cbor_is_read_commanded_and_observed(db, listener, speaks):
    city = await make_city(db, "seoul")
    record = await light(db, city, "no-cbor")
    device = RawDevice("no-cbor", speaks, dict(IDENTITY))
    await device.start()
    try:
        assert (await device.register(listener.port)).code == CREATED

        async def identity_recorded():
            async with db.system_tx() as conn:
                return await conn.fetchrow("select manufacturer, model, firmware_version, serial, "
                                           "read_content_format from devices where id = $1 "
                                           "and manufacturer is not null", record.id)
        row = await eventually(identity_recorded)
        assert (row["manufacturer"], row["model"], row["firmware_version"], row["serial"]) == \
            ("Acme Lighting", "AL-9", "2.4.1", "SN-0042")
        assert row["read_content_format"] == speaks[0]  # learned, for every node and restart

        service = CommandService(db)
        read = await service.submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.READ, "/3416/0/1"))
        read = await wait_for_batch(db, city, read.id)
        assert read.commands[0].result == {"readings": [{"path": "/3416/0/1", "value": 70}]}
        # Learned: the command's read asked in the device's format straight away.
        assert device.requests[-1].uint(ACCEPT) == speaks[0]

        observe = await service.submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.OBSERVE, "/3416/0/1"))
        observe = await wait_for_batch(db, city, observe.id)
        assert observe.counts["succeeded"] == 1, observe.commands[0].error
        device.values["/3416/0/1"] = 25
        reply = await device.notify("/3416/0/1")
        assert reply.mtype == 2  # acknowledged: the observation is known
        await level_stored(db, record.id, 25)
    finally:
        device.stop()


async def test_formats_announced_at_registration_are_asked_first(db, listener):
    city = await make_city(db, "seoul")
    record = await light(db, city, "announcer")
    device = RawDevice("announcer", (SENML_JSON, TLV), dict(IDENTITY),
                       links='</>;rt="oma.lwm2m";ct=110,</3/0>,</3416/0>')
    await device.start()
    try:
        assert (await device.register(listener.port)).code == CREATED

        async def identity_read():
            return [r for r in device.requests if r.path == "/3/0"]
        first = (await eventually(identity_read))[0]
        assert first.uint(ACCEPT) == SENML_JSON  # no 4.06 round trip first

        async def recorded():
            async with db.system_tx() as conn:
                return await conn.fetchval("select manufacturer from devices where id = $1", record.id)
        assert await eventually(recorded) == "Acme Lighting"
        assert [r.uint(ACCEPT) for r in device.requests if r.path == "/3/0"] == [SENML_JSON]
    finally:
        device.stop()


async def test_an_answer_in_another_format_than_asked_is_taken_and_remembered(db, listener):
    city = await make_city(db, "seoul")
    record = await light(db, city, "headstrong")
    device = RawDevice("headstrong", (TLV,), dict(IDENTITY), ignores_accept=True)
    await device.start()
    try:
        assert (await device.register(listener.port)).code == CREATED

        async def learned():
            async with db.system_tx() as conn:
                return await conn.fetchrow("select manufacturer, read_content_format from devices "
                                           "where id = $1 and manufacturer is not null", record.id)
        assert tuple(await eventually(learned)) == ("Acme Lighting", TLV)
        assert [r.uint(ACCEPT) for r in device.requests if r.path == "/3/0"] == [112]
        read = await CommandService(db).submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.READ, "/3416/0"))
        read = await wait_for_batch(db, city, read.id)
        assert read.commands[0].result == {"readings": [{"path": "/3416/0/1", "value": 70}]}
        assert device.requests[-1].uint(ACCEPT) == TLV
    finally:
        device.stop()


async def test_a_client_that_speaks_no_readable_format_fails_the_read_with_4_06(db, listener):
    city = await make_city(db, "seoul")
    record = await light(db, city, "stubborn")
    device = RawDevice("stubborn", (11543,), dict(IDENTITY))  # LwM2M JSON only
    await device.start()
    try:
        assert (await device.register(listener.port)).code == CREATED
        read = await CommandService(db).submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.READ, "/3416/0/1"))
        read = await wait_for_batch(db, city, read.id)
        assert read.counts["failed"] == 1
        assert "4.06" in read.commands[0].error
        tried = [r.uint(ACCEPT) for r in device.requests if r.path == "/3416/0/1"]
        assert tried == [112, 110, 11542, 0]
    finally:
        device.stop()


def test_the_order_puts_learned_then_announced_then_fleets_preference():
    from fleet.objectmodel import ResourcePath
    from fleet.registrations.models import ReadFormatHints
    from protocols.lwm2m.negotiation import announced_formats, candidates

    resource, instance = ResourcePath(3416, 0, 1), ResourcePath(3, 0)
    assert candidates(ReadFormatHints(), resource) == [112, 110, 11542, 0]
    assert candidates(ReadFormatHints(), instance) == [112, 110, 11542]  # text is one resource only
    announced = ReadFormatHints(None, '</>;rt="oma.lwm2m";ct="11542 110",</3/0>')
    assert candidates(announced, instance) == [11542, 110, 112]
    assert candidates(ReadFormatHints(110, announced.object_links), instance) == [110, 11542, 112]
    # LwM2M JSON, which Fleet does not read, is not asked for; broken links announce nothing.
    assert announced_formats('</>;rt="oma.lwm2m";ct=11543,</3/0>') == ()
    assert announced_formats('</>;ct=x') == () and announced_formats("<broken") == ()
