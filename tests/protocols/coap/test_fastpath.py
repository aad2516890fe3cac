"""The Send fast path on real UDP: piggybacked answers only after commit, RFC 7252 deduplication,
empty ACK then separate response when the commit is slow, and delegation to aiocoap."""

from __future__ import annotations

import asyncio
import socket

import cbor2
import pytest
from aiocoap import Code, Message
from aiocoap.numbers.types import CON

from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from protocols.coap import transport
from protocols.coap.fastpath import parse_post
from tests.conftest import make_city

PACK = cbor2.dumps([{-2: "/3303/0/", 0: "5700", 2: 21.5}, {0: "5701", 3: "Cel"}])
_ACK, _EMPTY = 2, 0


def datagram(mid: int, token: bytes, path: str, payload: bytes = b"", *, code=Code.POST,
             content_format: int | None = None, **options) -> bytes:
    message = Message(code=code, payload=payload, **options)
    message.opt.uri_path = tuple(path.strip("/").split("/"))
    if "?" in path:
        raise ValueError("pass uri_query=")
    if content_format is not None:
        message.opt.content_format = content_format
    message.mtype, message.mid, message.token = CON, mid, token
    return message.encode()


class RawDevice(asyncio.DatagramProtocol):
    """A device on its own UDP socket that shows every datagram it gets and refuses the
    server's own requests (the /3/0 read after Register) with 4.04."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if 1 <= data[1] < 32 and data[0] >> 4 & 0x3 == 0:  # a CON request from the server
            self.transport.sendto(bytes((0x60 | data[0] & 0x0F, 0x84)) + data[2:4 + (data[0] & 0x0F)])
            return
        self.received.put_nowait(data)

    async def next(self, timeout: float = 3.0) -> bytes:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def nothing_for(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.received.get(), seconds)
        except TimeoutError:
            return True
        return False

    def send(self, data: bytes) -> None:
        self.transport.sendto(data)


@pytest.fixture
async def device(db, listener):
    city = await make_city(db, "seoul")
    record = await DeviceService(db).create_validated(
        city.principal, NewDevice(kind=DeviceKind.WASTE_BIN, endpoint="fast-1", lat=37.5, lon=127.0))
    loop = asyncio.get_running_loop()
    _, raw = await loop.create_datagram_endpoint(RawDevice, remote_addr=("127.0.0.1", listener.port),
                                                 family=socket.AF_INET)
    raw.send(datagram(1, b"r", "/rd", b"</3/0>", content_format=40,
                      uri_query=("ep=fast-1", "lt=300", "lwm2m=1.1", "b=U")))
    reply = await raw.next()
    assert reply[1] == Code.CREATED, reply
    raw.device_id = record.id
    yield raw
    raw.transport.close()


async def stored(db, device_id) -> int:
    async with db.system_tx() as conn:
        return await conn.fetchval("select count(*) from telemetry where device_id = $1", device_id)


def fast_path(listener):
    [fast] = transport.fast_paths(listener.context)
    return fast


async def test_send_is_answered_piggybacked_after_commit(db, listener, device):
    device.send(datagram(0x1001, b"\x0a\x0b", "/dp", PACK, content_format=112))
    reply = await device.next()
    assert reply == bytes((0x62, Code.CHANGED)) + b"\x10\x01\x0a\x0b"
    assert await stored(db, device.device_id) == 2
    assert fast_path(listener).answered == 1


async def test_duplicate_gets_the_same_answer_and_is_stored_once(db, listener, device):
    request = datagram(0x2002, b"\x01", "/dp", PACK, content_format=112)
    device.send(request)
    first = await device.next()
    device.send(request)
    assert await device.next() == first
    assert await stored(db, device.device_id) == 2
    assert fast_path(listener).duplicates == 1


async def test_duplicate_while_committing_is_not_answered_early(db, listener, device, monkeypatch):
    commit = asyncio.get_running_loop().create_future()
    submitted = []
    monkeypatch.setattr(listener.writer, "submit", lambda points: submitted.append(points) or commit)
    request = datagram(0x3003, b"\x02", "/dp", PACK, content_format=112)
    device.send(request)
    device.send(request)
    assert await device.nothing_for(0.3), "nothing may be acknowledged before the commit"
    assert len(submitted) == 1
    commit.set_result(None)
    assert (await device.next())[1] == Code.CHANGED
    assert await device.nothing_for(0.2)


async def test_slow_commit_gets_empty_ack_then_separate_response(db, listener, device, monkeypatch):
    fast = fast_path(listener)
    monkeypatch.setattr(fast, "empty_ack_delay", 0.1)
    commit = asyncio.get_running_loop().create_future()
    monkeypatch.setattr(listener.writer, "submit", lambda points: commit)
    request = datagram(0x4004, b"\x03\x04", "/dp", PACK, content_format=112)
    device.send(request)
    assert await device.next() == bytes((0x60, 0x00)) + b"\x40\x04"  # empty ACK
    device.send(request)
    assert await device.next() == bytes((0x60, 0x00)) + b"\x40\x04"  # a duplicate gets it again
    commit.set_result(None)
    separate = await device.next()
    assert separate[0] >> 4 == 0x4 and separate[1] == Code.CHANGED  # CON 2.04
    assert separate[4:4 + (separate[0] & 0x0F)] == b"\x03\x04"
    device.send(bytes((0x60, 0x00)) + separate[2:4])  # acknowledge it; no retransmission follows
    assert await device.nothing_for(3.2)  # ACK_TIMEOUT × ACK_RANDOM_FACTOR is at most 3 s
    assert fast.separate == 1


async def test_failed_commit_is_answered_with_5_00(db, listener, device, monkeypatch):
    failed = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("database went away"))
    monkeypatch.setattr(listener.writer, "submit", lambda points: failed)
    device.send(datagram(0x5005, b"\x05", "/dp", PACK, content_format=112))
    reply = await device.next()
    assert reply[1] == 0xA0  # 5.00, never a 2.xx without a commit


async def test_what_the_fast_path_leaves_out_is_answered_by_aiocoap(db, listener, device):
    cases = [
        (datagram(0x6001, b"\x06", "/dp", b"\xff\x00garbage", content_format=112), Code.BAD_REQUEST),
        (datagram(0x6002, b"\x07", "/dp", b"21.5", content_format=0), Code.UNSUPPORTED_CONTENT_FORMAT),
        (datagram(0x6003, b"\x08", "/dp", PACK, content_format=112, uri_query=("x=1",)), Code.CHANGED),
        (datagram(0x6004, b"\x09", "/dp", PACK, code=Code.PUT, content_format=112), Code.METHOD_NOT_ALLOWED),
    ]
    for request, expected in cases:
        device.send(request)
        reply = await device.next()
        assert reply[1] == expected, (request, reply)
        device.send(request)  # a retransmission is deduplicated by aiocoap, not processed again
        assert await device.next() == reply
    assert await stored(db, device.device_id) == 2
    fast = fast_path(listener)
    assert (fast.answered, fast.delegated) == (0, 2)


@pytest.mark.parametrize("token_length", [9, 12, 15])
async def test_token_length_9_to_15_is_a_format_error_not_a_send(db, listener, device, token_length):
    """Defect 4: RFC 7252 §3 makes these lengths a message format error; a CON is rejected
    with a Reset (§4.2), its token never echoed and nothing stored."""
    valid = datagram(0x8008, b"\x0c", "/dp", PACK, content_format=112)
    bad = bytes((0x40 | token_length,)) + valid[1:4] + b"\x0c" * token_length + valid[5:]
    device.send(bad)
    assert await device.next() == bytes((0x70, 0x00, 0x80, 0x08))  # RST, same message ID
    device.send(bad)  # not remembered as an exchange either
    assert await device.next() == bytes((0x70, 0x00, 0x80, 0x08))
    assert await stored(db, device.device_id) == 0
    assert fast_path(listener).answered == 0
    device.send(valid)  # the same message ID, well formed, is a new exchange
    assert (await device.next())[1] == Code.CHANGED
    assert await stored(db, device.device_id) == 2


async def test_format_errors_in_a_request_get_4_00_with_a_diagnostic(listener, device):
    device.send(bytes((0x41, 0x02, 0x90, 0x09, 0x0d, 0xB2)) + b"dp\xff")  # marker without payload
    reply = await device.next()
    assert reply[:5] == bytes((0x61, 0x80, 0x90, 0x09, 0x0d))
    assert reply[5:] == b"\xffmalformed CoAP: payload marker followed by no payload"


async def test_unregistered_peer_is_refused_by_aiocoap(listener):
    loop = asyncio.get_running_loop()
    _, raw = await loop.create_datagram_endpoint(RawDevice, remote_addr=("127.0.0.1", listener.port),
                                                 family=socket.AF_INET)
    try:
        raw.send(datagram(0x7007, b"\x0b", "/dp", PACK, content_format=112))
        assert (await raw.next())[1] == Code.FORBIDDEN
    finally:
        raw.transport.close()


@pytest.mark.parametrize("data", [
    bytes((0x41, 0x02, 0, 1)),  # token length 1, no token
    bytes((0x40, 0x02, 0, 1, 0xB2, ord("d"))),  # option value cut short
    bytes((0x40, 0x02, 0, 1, 0xF0)),  # reserved option delta
    bytes((0x40, 0x02, 0, 1, 0xB2)) + b"dp" + b"\xff",  # payload marker without payload
    bytes((0x40, 0x02, 0, 1, 0xD1, 0x00, 0x01)),  # option 13: neither Uri-Path nor Content-Format
    bytes((0x40, 0x02, 0, 1, 0xB2)) + b"dp" + bytes((0x11, 0x70, 0x11, 0x70)),  # Content-Format twice
    bytes((0x49, 0x02, 0, 1)) + b"t" * 9 + bytes((0xB2,)) + b"dp\xff\x80",  # token length 9
])
def test_parse_post_declines_what_it_does_not_know(data):
    assert parse_post(data) is None


def test_parse_post_reads_path_format_and_payload():
    data = datagram(9, b"\x01\x02", "/dp", b"\x80", content_format=112)
    assert parse_post(data) == ((b"dp",), 112, b"\x80")
