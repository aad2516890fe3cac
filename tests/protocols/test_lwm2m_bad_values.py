"""Defect 2 on real UDP: one device's unstorable value is refused with 4.00 before it is queued,
and never fails another device's data; a Register with a NUL gets 4.00, not 5.00."""

from __future__ import annotations

import asyncio

import aiocoap
import cbor2
from aiocoap import Code, Message

from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from tests.conftest import make_city
from tests.protocols.devices import MiniDevice
from tests.protocols.test_commands import light, wait_for_batch
from tests.protocols.test_lwm2m_server import provision, register, uri


async def rows(db, device_id) -> int:
    async with db.system_tx() as conn:
        return await conn.fetchval("select count(*) from telemetry where device_id = $1", device_id)


async def test_a_nul_in_one_send_is_refused_and_the_other_devices_send_is_committed(db, listener):
    city = await make_city(db, "seoul")
    good_device, bad_device = await provision(db, city, "bin-good"), await provision(db, city, "bin-bad")
    good = await aiocoap.Context.create_client_context(transports=["udp6"])
    bad = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        assert (await register(good, listener, "bin-good")).code == Code.CREATED
        assert (await register(bad, listener, "bin-bad")).code == Code.CREATED

        def send(pack) -> Message:
            return Message(code=Code.POST, uri=uri(listener, "/dp"), payload=cbor2.dumps(pack), content_format=112)

        clean = [{-2: "/3435/0/", 0: "2", 2: 41.5}, {-2: "/3/0/", 0: "0", 3: "Acme"}]
        poisoned = [{-2: "/3435/0/", 0: "2", 2: 40.0}, {-2: "/3/0/", 0: "0", 3: "Ac\x00me"}]
        # Both in the same moment, so that without the check they would share a group commit.
        good_answer, bad_answer = await asyncio.gather(good.request(send(clean)).response,
                                                       bad.request(send(poisoned)).response)
        assert good_answer.code == Code.CHANGED, good_answer.payload
        assert bad_answer.code == Code.BAD_REQUEST
        assert bad_answer.payload == b"record 1 vs: string contains a NUL character"
        assert await rows(db, good_device.id) == 2
        assert await rows(db, bad_device.id) == 0
    finally:
        await good.shutdown()
        await bad.shutdown()


async def test_register_with_a_nul_in_the_endpoint_name_is_a_bad_request(db, listener, coap_client):
    request = Message(code=Code.POST, uri=uri(listener, "/rd?lt=300&lwm2m=1.1"), payload=b"</3/0>",
                      content_format=40)
    request.opt.uri_query = (*request.opt.uri_query, "ep=bin\x00evil")
    response = await coap_client.request(request).response
    assert response.code == Code.BAD_REQUEST
    assert response.payload == b"ep: string contains a NUL character"


async def test_register_with_a_percent_encoded_nul_or_a_nul_in_its_links_is_a_bad_request(db, listener, coap_client):
    city = await make_city(db, "seoul")
    await provision(db, city, "bin-3")
    query = Message(code=Code.POST, uri=uri(listener, "/rd?ep=bin-3&lt=300&sms=%00"), payload=b"</3/0>",
                    content_format=40)
    response = await coap_client.request(query).response
    assert (response.code, response.payload) == (Code.BAD_REQUEST, b"sms: string contains a NUL character")
    links = Message(code=Code.POST, uri=uri(listener, "/rd?ep=bin-3&lt=300"), payload=b'</3/0>;title="\x00"',
                    content_format=40)
    response = await coap_client.request(links).response
    assert response.code == Code.BAD_REQUEST and b"NUL" in response.payload


async def test_a_read_answer_with_a_nul_fails_the_command_and_stores_nothing(db, listener):
    city = await make_city(db, "seoul")
    record = await light(db, city, "light-nul")
    device = MiniDevice("light-nul")
    device.add("/3/0/0", "Acme\x00Lighting")  # also what the /3/0 read after Register would see
    await device.start()
    try:
        assert (await device.register(listener.port)).code.is_successful()
        read = await CommandService(db).submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.READ, "/3/0/0"))
        read = await wait_for_batch(db, city, read.id)
        assert read.counts["failed"] == 1, read.counts
        assert read.commands[0].error == "undecodable answer: record 0 vs: string contains a NUL character"
        assert await rows(db, record.id) == 0
    finally:
        await device.stop()
