"""The LwM2M server on real UDP: registration lifecycle, Send, malformed input, tenant attribution."""

from __future__ import annotations

import asyncio
import socket

import aiocoap
import cbor2
from aiocoap import Code, Message
from structlog.testing import capture_logs

from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import make_city


async def provision(db, city, endpoint: str, kind=DeviceKind.WASTE_BIN):
    return await DeviceService(db).create_validated(
        city.principal, NewDevice(kind=kind, endpoint=endpoint, lat=37.5, lon=127.0))


def uri(listener, path: str) -> str:
    return f"coap://127.0.0.1:{listener.port}{path}"


async def register(client, listener, endpoint: str, lifetime: int = 300, binding: str = "U"):
    request = Message(code=Code.POST, uri=uri(listener, f"/rd?ep={endpoint}&lt={lifetime}&lwm2m=1.1&b={binding}"),
                      payload=b"</1/0>,</3/0>,</3435/0>,</3303/0>", content_format=40)
    return await client.request(request).response


async def device_status(db, device_id) -> str:
    async with db.system_tx() as conn:
        return await conn.fetchval("select status from devices where id = $1", device_id)


async def test_register_update_deregister(db, listener, coap_client):
    city = await make_city(db, "seoul")
    device = await provision(db, city, "bin-1")
    response = await register(coap_client, listener, "bin-1")
    assert response.code == Code.CREATED, response.payload
    location = response.opt.location_path
    assert location[0] == "rd" and len(location) == 2
    assert await device_status(db, device.id) == "online"
    async with db.system_tx() as conn:
        row = await conn.fetchrow("select * from registrations where device_id = $1", device.id)
    assert (row["lifetime_s"], row["binding"], row["lwm2m_version"]) == (300, "U", "1.1")
    assert "</3435/0>" in row["object_links"]

    update = Message(code=Code.POST, uri=uri(listener, f"/rd/{location[1]}?lt=600&b=UQ"))
    assert (await coap_client.request(update).response).code == Code.CHANGED
    async with db.system_tx() as conn:
        row = await conn.fetchrow("select * from registrations where device_id = $1", device.id)
    assert (row["lifetime_s"], row["queue_mode"]) == (600, True)

    delete = Message(code=Code.DELETE, uri=uri(listener, f"/rd/{location[1]}"))
    assert (await coap_client.request(delete).response).code == Code.DELETED
    assert await device_status(db, device.id) == "offline"
    again = Message(code=Code.POST, uri=uri(listener, f"/rd/{location[1]}"))
    assert (await coap_client.request(again).response).code == Code.NOT_FOUND


async def test_unknown_endpoint_is_forbidden(db, listener, coap_client):
    response = await register(coap_client, listener, "nobody-knows-me")
    assert response.code == Code.FORBIDDEN
    assert b"not provisioned" in response.payload


async def test_send_is_stored_in_telemetry_and_state(db, listener, coap_client):
    city = await make_city(db, "seoul")
    device = await provision(db, city, "bin-2")
    assert (await register(coap_client, listener, "bin-2")).code == Code.CREATED
    pack = [{-2: "/3435/0/", 0: "2", 2: 41.5}, {0: "3", 2: 12.0}, {-2: "/3303/0/", 0: "5700", 2: 21.25}]
    send = Message(code=Code.POST, uri=uri(listener, "/dp"), payload=cbor2.dumps(pack), content_format=112)
    response = await coap_client.request(send).response
    assert response.code == Code.CHANGED, response.payload
    async with db.system_tx() as conn:
        count = await conn.fetchval("select count(*) from telemetry where device_id = $1", device.id)
        state = {r["path"]: r["v_num"] for r in await conn.fetch(
            "select path, v_num from device_state where device_id = $1", device.id)}
    assert count == 3
    assert state["/3435/0/2"] == 41.5 and state["/3303/0/5700"] == 21.25


async def test_lifetime_expiry_sets_offline(db, listener, coap_client):
    city = await make_city(db, "seoul")
    device = await provision(db, city, "bin-3")
    assert (await register(coap_client, listener, "bin-3", lifetime=1)).code == Code.CREATED
    assert await device_status(db, device.id) == "online"
    for _ in range(50):
        await asyncio.sleep(0.1)
        if await device_status(db, device.id) == "offline":
            break
    assert await device_status(db, device.id) == "offline"


async def test_malformed_inputs_get_4xx_and_store_nothing(db, listener, coap_client):
    city = await make_city(db, "seoul")
    device = await provision(db, city, "bin-4")
    assert (await register(coap_client, listener, "bin-4")).code == Code.CREATED
    cases = [
        (Message(code=Code.POST, uri=uri(listener, "/dp"), payload=b"\xff\x00garbage", content_format=112), Code.BAD_REQUEST),
        (Message(code=Code.POST, uri=uri(listener, "/dp"), payload=b'[{"n": "/3303/0/5700", "v": "x"}]', content_format=110), Code.BAD_REQUEST),
        (Message(code=Code.POST, uri=uri(listener, "/dp"), payload=b'[{"n":', content_format=110), Code.BAD_REQUEST),
        (Message(code=Code.POST, uri=uri(listener, "/dp"), payload=b"21.5", content_format=0), Code.UNSUPPORTED_CONTENT_FORMAT),
        (Message(code=Code.POST, uri=uri(listener, "/rd?ep=bin-4&lt=abc"), payload=b"</3/0>", content_format=40), Code.BAD_REQUEST),
        (Message(code=Code.POST, uri=uri(listener, "/rd?ep=bin-4"), payload=b"<3/0", content_format=40), Code.BAD_REQUEST),
        (Message(code=Code.POST, uri=uri(listener, "/nowhere"), payload=b""), Code.NOT_FOUND),
    ]
    for request, expected in cases:
        response = await coap_client.request(request).response
        assert response.code == expected, (request.opt.uri_path, response.code, response.payload)
        assert response.payload, "a diagnostic payload is expected"
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from telemetry where device_id = $1", device.id) == 0


async def test_malformed_datagram_gets_bad_request(listener):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        # CON POST, token length 1, mid 0x1234, then an option with reserved delta 15 (format error)
        sock.sendto(bytes([0x41, 0x02, 0x12, 0x34, 0xAB, 0xF1, 0x00]), ("127.0.0.1", listener.port))
        reply, _ = await asyncio.get_running_loop().run_in_executor(None, sock.recvfrom, 2048)
    finally:
        sock.close()
    assert reply[1] == 0x80  # 4.00
    assert reply[2:4] == b"\x12\x34" and reply[4] == 0xAB
    assert b"malformed" in reply


async def test_send_from_unregistered_address_is_forbidden(listener, coap_client):
    send = Message(code=Code.POST, uri=uri(listener, "/dp"), payload=cbor2.dumps([{0: "/3303/0/5700", 2: 1.0}]),
                   content_format=112)
    assert (await coap_client.request(send).response).code == Code.FORBIDDEN


async def test_backed_up_writer_sheds_sends_with_5_03_and_max_age(db, listener, coap_client):
    city = await make_city(db, "seoul")
    device = await provision(db, city, "bin-busy")
    assert (await register(coap_client, listener, "bin-busy")).code == Code.CREATED
    listener.writer.max_backlog_points = -1  # as if far more were waiting than commits can take
    send = Message(code=Code.POST, uri=uri(listener, "/dp"),
                   payload=cbor2.dumps([{0: "/3435/0/2", 2: 50.0}]), content_format=112)
    response = await coap_client.request(send).response
    assert response.code == Code.SERVICE_UNAVAILABLE and response.opt.max_age == 10
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from telemetry where device_id = $1", device.id) == 0


async def test_stopping_answers_requests_under_way_and_refuses_new_ones(db, coap_client):
    """Stopping drains: a Send taken before is committed and gets its 2.04 before the socket
    closes; one arriving meanwhile gets 5.03 with Max-Age and stores nothing."""
    from protocols.lwm2m.listener import open_listener

    city = await make_city(db, "seoul")
    early = await provision(db, city, "bin-early")
    late = await provision(db, city, "bin-late")
    late_client = await aiocoap.Context.create_client_context(transports=["udp6"])
    opened = open_listener(db, "::", 0)
    running = await opened.__aenter__()
    closing = None
    try:
        assert (await register(coap_client, running, "bin-early")).code == Code.CREATED
        assert (await register(late_client, running, "bin-late")).code == Code.CREATED

        def send(level: float) -> Message:
            return Message(code=Code.POST, uri=uri(running, "/dp"),
                           payload=cbor2.dumps([{0: "/3435/0/2", 2: level}]), content_format=112)

        async with db.pool.acquire() as blocker:
            async with blocker.transaction():
                # The writer's commit waits on this lock: the Send stays under way.
                await blocker.execute("lock table device_state in exclusive mode")
                under_way = asyncio.ensure_future(coap_client.request(send(41.0)).response)
                for _ in range(200):
                    if not running.writer.idle:
                        break
                    await asyncio.sleep(0.01)
                assert not running.writer.idle
                closing = asyncio.ensure_future(opened.__aexit__(None, None, None))
                for _ in range(200):
                    if running.server.draining:
                        break
                    await asyncio.sleep(0.01)
                refused = await late_client.request(send(77.0)).response
                assert refused.code == Code.SERVICE_UNAVAILABLE and refused.opt.max_age == 10
                assert not under_way.done()
        assert (await under_way).code == Code.CHANGED
        with capture_logs() as logs:
            await closing
        # However many were refused, one line says so.
        assert [(e["event"], e["count"]) for e in logs if "refused" in e["event"]] == [
            ("CoAP requests refused while stopping (5.03, the devices retry later)", 1)]
        async with db.system_tx() as conn:
            stored = {r["device_id"]: r["v_num"] for r in await conn.fetch(
                "select device_id, v_num from telemetry where path = '/3435/0/2'")}
        assert stored == {early.id: 41.0}, late.id
    finally:
        if closing is None:
            await opened.__aexit__(None, None, None)
        await late_client.shutdown()
