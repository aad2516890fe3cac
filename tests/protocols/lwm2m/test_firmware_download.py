"""Firmware delivery over real UDP and PostgreSQL: Block2 downloads of /fw/<token> and Block1 pushes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from datetime import UTC, datetime, timedelta

import aiocoap
import aiocoap.resource as resource
import pytest
from aiocoap import Code, Message
from aiocoap.numbers.types import Type
from aiocoap.optiontypes import BlockOption

from fleet.access.limits import Rate
from fleet.commands.models import Operation
from fleet.commands.repository import CommandRepository
from fleet.firmware.delivery import package_uri
from fleet.objectmodel import Reading, ResourcePath
from protocols.coap import message, transport
from protocols.lwm2m import senml
from protocols.lwm2m.downlink import DeviceAddress, DeviceRequestFailed
from protocols.lwm2m.listener import open_listener
from tests.conftest import make_city
from tests.protocols.devices import MiniDevice
from tests.protocols.lwm2m.firmware_rows import downloading, store_image
from tests.protocols.test_commands import light

IMAGE = os.urandom(5000)  # not a whole number of blocks; five 1 KiB chunks


@pytest.fixture
async def city(db):
    return await make_city(db, "seoul")


@pytest.fixture
async def image_id(db, city):
    return await store_image(db, city.tenant_id, IMAGE)


async def token_for(db, city, image_id, endpoint: str, **kwargs) -> str:
    device = await light(db, city, endpoint)
    return await downloading(db, city.tenant_id, device.id, image_id, **kwargs)


def uri(listener, token: str) -> str:
    return package_uri(f"coap://[::1]:{listener.port}", token)


def block2(number: int, size: int) -> BlockOption.BlockwiseTuple:
    return BlockOption.BlockwiseTuple(number, False, size.bit_length() - 5)


@pytest.mark.parametrize("size", [16, 64, 1024])
async def test_download_in_the_block_size_the_device_chooses(db, listener, coap_client, city, image_id, size):
    token = await token_for(db, city, image_id, f"light-{size}")
    request = Message(code=Code.GET, uri=uri(listener, token), block2=block2(0, size))
    response = await coap_client.request(request).response
    assert response.code == Code.CONTENT and response.payload == IMAGE
    assert response.opt.content_format == 42
    assert response.opt.etag == hashlib.sha256(IMAGE).digest()[:8]
    assert listener.server.downloads.downloads_finished >= 1
    # After the first block (token and chunk not yet in memory) the transport serves them.
    assert sum(fast.blocks for fast in transport.fast_paths(listener.context)) >= len(IMAGE) // size - 5


async def test_each_block_and_resumption(db, listener, coap_client, city, image_id):
    token = await token_for(db, city, image_id, "light-resume")
    first = await coap_client.request(
        Message(code=Code.GET, uri=uri(listener, token), block2=block2(0, 256)), handle_blockwise=False).response
    assert first.opt.block2 == BlockOption.BlockwiseTuple(0, True, 4)
    assert first.opt.size2 == len(IMAGE) and first.payload == IMAGE[:256]
    # Resume at block 7 (of 256 bytes), then go on to the last one: M is clear only there.
    received = b""
    number = 7
    while True:
        answer = await coap_client.request(Message(code=Code.GET, uri=uri(listener, token),
                                                   block2=block2(number, 256)), handle_blockwise=False).response
        assert answer.code == Code.CONTENT and answer.opt.block2.block_number == number
        assert answer.opt.etag == first.opt.etag and answer.opt.size2 is None
        received += answer.payload
        if not answer.opt.block2.more:
            break
        number += 1
    assert received == IMAGE[7 * 256:]
    assert number == (len(IMAGE) - 1) // 256


async def test_without_block2_block_zero_of_1024_and_errors(db, listener, coap_client, city, image_id):
    token = await token_for(db, city, image_id, "light-plain")
    answer = await coap_client.request(Message(code=Code.GET, uri=uri(listener, token)),
                                       handle_blockwise=False).response
    assert answer.opt.block2 == BlockOption.BlockwiseTuple(0, True, 6)
    assert answer.opt.size2 == len(IMAGE) and answer.payload == IMAGE[:1024]
    beyond = await coap_client.request(Message(code=Code.GET, uri=uri(listener, token), block2=block2(5, 1024)),
                                       handle_blockwise=False).response
    assert beyond.code == Code.BAD_REQUEST and b"beyond the end" in beyond.payload
    post = await coap_client.request(Message(code=Code.POST, uri=uri(listener, token))).response
    assert post.code == Code.METHOD_NOT_ALLOWED
    json_please = await coap_client.request(Message(code=Code.GET, uri=uri(listener, token), accept=50)).response
    assert json_please.code == Code.NOT_ACCEPTABLE


async def test_small_package_whole_without_block2(db, listener, coap_client, city):
    small = os.urandom(300)
    image_id = await store_image(db, city.tenant_id, small)
    token = await token_for(db, city, image_id, "light-small")
    answer = await coap_client.request(Message(code=Code.GET, uri=uri(listener, token)),
                                       handle_blockwise=False).response
    assert answer.payload == small and answer.opt.block2 is None and answer.opt.size2 == 300


async def test_non_confirmable_download(db, listener, coap_client, city, image_id):
    token = await token_for(db, city, image_id, "light-non")
    request = Message(code=Code.GET, mtype=Type.NON, uri=uri(listener, token), block2=block2(2, 512))
    answer = await coap_client.request(request, handle_blockwise=False).response
    assert answer.code == Code.CONTENT and answer.payload == IMAGE[1024:1536]


@pytest.mark.parametrize("kwargs", [{"expires_in": timedelta(seconds=-1)}, {"state": "downloaded"}],
                         ids=["expired", "no-longer-downloading"])
async def test_token_not_downloading_is_not_found(db, listener, coap_client, city, image_id, kwargs):
    token = await token_for(db, city, image_id, "light-gone", **kwargs)
    answer = await coap_client.request(Message(code=Code.GET, uri=uri(listener, token))).response
    assert answer.code == Code.NOT_FOUND and b"token" in answer.payload
    unknown = await coap_client.request(Message(code=Code.GET, uri=uri(listener, "nonsense"))).response
    assert unknown.code == Code.NOT_FOUND


async def test_download_is_not_held_to_the_peer_rate(db, city, coap_client):
    image = os.urandom(64 * 1024)
    image_id = await store_image(db, city.tenant_id, image, chunk_size=16 * 1024)
    token = await token_for(db, city, image_id, "light-burst")
    async with open_listener(db, "::", 0, peer_rate=Rate(5, 5), address_rate=Rate(5, 5)) as running:
        response = await coap_client.request(
            Message(code=Code.GET, uri=uri(running, token), block2=block2(0, 1024))).response
        assert response.code == Code.CONTENT and response.payload == image


class FirmwareSink(resource.Resource):
    """A device's /5/0/0 taking Block1 PUTs in 256-byte blocks: larger ones are accepted and
    answered with 2.31 naming 256 (RFC 7959 §2.3), or refused with 4.13 naming it (§2.9.3)."""

    def __init__(self, refuse_large: bool = False) -> None:
        super().__init__()
        self.refuse_large = refuse_large
        self.received = bytearray()
        self.sizes: list[int] = []
        self.done = asyncio.Event()

    async def needs_blockwise_assembly(self, request):
        return False

    async def render_put(self, request):
        block = request.opt.block1
        if request.opt.content_format != 42:
            return Message(code=Code.UNSUPPORTED_CONTENT_FORMAT)
        if block.size > 256 and self.refuse_large:
            return Message(code=Code.REQUEST_ENTITY_TOO_LARGE, block1=(0, False, 4))
        if block.block_number * block.size != len(self.received):
            return Message(code=Code.REQUEST_ENTITY_INCOMPLETE)
        self.received += request.payload
        self.sizes.append(block.size)
        if block.more:
            return Message(code=Code.CONTINUE, block1=(block.block_number, True, min(block.size_exponent, 4)))
        self.done.set()
        return Message(code=Code.CHANGED, block1=(block.block_number, False, block.size_exponent))


async def firmware_device(sink: FirmwareSink) -> tuple[aiocoap.Context, int]:
    site = resource.Site()
    site.add_resource(("5", "0", "0"), sink)
    context = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])
    port = next(iter(context.request_interfaces)).token_interface.message_interface.transport \
        .get_extra_info("socket").getsockname()[1]
    return context, port


@pytest.mark.parametrize("refuse_large", [False, True], ids=["continue-smaller", "entity-too-large"])
async def test_push_follows_the_device_block_size(listener, refuse_large):
    sink = FirmwareSink(refuse_large)
    device, port = await firmware_device(sink)
    try:
        size = await listener.client.push(DeviceAddress("127.0.0.1", port), ResourcePath(5, 0, 0), IMAGE)
        assert size == 256 and bytes(sink.received) == IMAGE
        assert sink.sizes[1:] == [256] * (len(sink.sizes) - 1)
    finally:
        await device.shutdown()


async def test_push_error_names_the_device_answer(listener):
    class Refusing(FirmwareSink):
        async def render_put(self, request):
            return Message(code=Code.INTERNAL_SERVER_ERROR, payload=b"flash full")

    device, port = await firmware_device(Refusing())
    try:
        with pytest.raises(DeviceRequestFailed) as failed:
            await listener.client.push(DeviceAddress("127.0.0.1", port), ResourcePath(5, 0, 0), IMAGE)
        assert failed.value.code.startswith("5.00") and "flash full" in failed.value.detail
    finally:
        await device.shutdown()


async def device_with(endpoint: str, path: str, object_5_resource: resource.Resource) -> MiniDevice:
    """A started MiniDevice with one resource of object 5 of the test's own."""
    device = MiniDevice(endpoint)
    device.site.add_resource(tuple(path.strip("/").split("/")), object_5_resource)
    device.resources[path] = object_5_resource
    await device.start()
    return device


async def finished(db, batch_id):
    for _ in range(200):
        async with db.system_tx() as conn:
            row = await conn.fetchrow("select status, result, error from commands where batch_id = $1", batch_id)
        if row["status"] not in ("queued", "sent"):
            return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"command {batch_id} never finished: {row}")


async def test_dispatcher_pushes_firmware(db, listener, city, image_id):
    record = await light(db, city, "push-light")
    sink = FirmwareSink()
    device = await device_with("push-light", "/5/0/0", sink)
    try:
        assert (await device.register(listener.port)).code.is_successful()
        async with db.system_tx() as conn:
            batch_id = await CommandRepository(conn).insert_batch(
                city.tenant_id, Operation.PUSH_FIRMWARE, "/5/0/0", {"image_id": str(image_id)}, {},
                [record.id], None, "firmware:test", datetime.now(UTC) + timedelta(minutes=5))
        row = await finished(db, batch_id)
        assert row["status"] == "succeeded", row
        assert row["result"] == {"pushed_bytes": len(IMAGE), "block_size": 256}
        assert bytes(sink.received) == IMAGE
    finally:
        await device.stop()


async def test_slow_lookup_answers_separately(db, listener, coap_client, city, image_id):
    """A lookup held up past EMPTY_ACK_DELAY: empty ACK, then the block as a separate CON."""
    token = await token_for(db, city, image_id, "light-slow")
    async with db.pool.acquire() as holder:
        async with holder.transaction():
            await holder.execute("lock table firmware_campaign_devices in access exclusive mode")
            pending = asyncio.ensure_future(coap_client.request(
                Message(code=Code.GET, uri=uri(listener, token), block2=block2(1, 1024)),
                handle_blockwise=False).response)
            await asyncio.sleep(1.5)
    answer = await pending
    assert answer.code == Code.CONTENT and answer.payload == IMAGE[1024:2048]
    assert sum(fast.separate for fast in transport.fast_paths(listener.context)) == 1


async def exchange(sock, port: int, datagram: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, datagram, ("::1", port))
    return await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)


def raw_get(mid: int, token: str, number: int) -> bytes:
    return message.encode(message.CON, message.GET, mid, b"\x07", [
        (message.URI_PATH, b"fw"), (message.URI_PATH, token.encode()),
        (message.BLOCK2, message.block_value(number, False, 1024))])


async def test_repeated_request_gets_the_same_answer(db, listener, city, image_id):
    token = await token_for(db, city, image_id, "light-twice")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        first = await exchange(sock, listener.port, raw_get(0x1234, token, 2))
        again = await exchange(sock, listener.port, raw_get(0x1234, token, 2))
        assert first == again
        assert message.decode(first).payload == IMAGE[2048:3072]


async def test_guessed_tokens_are_held_to_the_peer_rate(db):
    async with open_listener(db, "::", 0, peer_rate=Rate(1, 3)) as running:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            codes = [message.decode(await exchange(sock, running.port, raw_get(n, f"guess{n}", 0))).code
                     for n in range(6)]
    assert codes[:3] == [message.NOT_FOUND] * 3 and message.SERVICE_UNAVAILABLE in codes[3:]


class PackageUriResource(resource.Resource):
    """A device's /5/0/1: takes a Package URI as text, reads it back as SenML CBOR."""

    def __init__(self) -> None:
        super().__init__()
        self.uri = ""

    async def render_put(self, request):
        self.uri = request.payload.decode()
        return Message(code=Code.CHANGED)

    async def render_get(self, request):
        pack = senml.encode_cbor([Reading(ResourcePath(5, 0, 1), None, self.uri)])
        return Message(code=Code.CONTENT, payload=pack, content_format=112)


async def test_the_package_uri_token_stays_with_the_device_alone(db, listener, city):
    record = await light(db, city, "uri-light")
    package = PackageUriResource()
    device = await device_with("uri-light", "/5/0/1", package)
    written = package_uri("coap://fleet.example:5683", "SECRETtoken123")
    try:
        assert (await device.register(listener.port)).code.is_successful()
        async with db.system_tx() as conn:
            repo = CommandRepository(conn)
            write = await repo.insert_batch(city.tenant_id, Operation.WRITE, "/5/0/1", written, {}, [record.id],
                                            None, "firmware:test", datetime.now(UTC) + timedelta(minutes=5))
        row = await finished(db, write)
        assert package.uri == written  # the device got the real token
        assert (row["status"], row["result"]) == ("succeeded", {"written": "coap://fleet.example:5683/fw/<token>"})
        async with db.system_tx() as conn:
            read = await CommandRepository(conn).insert_batch(
                city.tenant_id, Operation.READ, "/5/0/1", None, {}, [record.id], None, "test",
                datetime.now(UTC) + timedelta(minutes=5))
        row = await finished(db, read)
        assert row["result"] == {"readings": [{"path": "/5/0/1", "value": "coap://fleet.example:5683/fw/<token>"}]}
        async with db.system_tx() as conn:
            stored = await conn.fetch(
                "select v_text from device_state where device_id = $1 and path = '/5/0/1' "
                "union all select v_text from telemetry where device_id = $1 and path = '/5/0/1'", record.id)
            events = await conn.fetchval("select count(*) from events where payload::text like '%SECRETtoken%'")
        assert stored and {r["v_text"] for r in stored} == {"coap://fleet.example:5683/fw/<token>"}
        assert events == 0
    finally:
        await device.stop()
