"""A real listener on real UDP takes 10,000+ hostile datagrams from a fixed seed: random bytes,
truncated headers, bit-flipped Register and Send, bad options, bad token lengths, broken SenML
JSON/CBOR and bad link-format. Never a 5.00, never a row from a refused datagram, and a valid
Register and Send are still answered afterwards."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import cbor2
import pytest

from fleet.access.limits import Rate
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from protocols.coap import message
from protocols.lwm2m import senml
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.listener import Listener, open_listener
from tests.conftest import make_city

SEED = 20261206
DATAGRAMS = 10_000
BURST = 250
QUIET_S = 0.15  # a burst is answered once nothing came back for this long...
BURST_DEADLINE_S = 5.0  # ...or after this, whichever is first
ENDPOINT = "fuzz-target-0001"
LINKS = b'</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>,</3303/0>,</3435/0>'
SENML_CBOR = cbor2.dumps([{-2: "/3303/0/", 0: "5700", 2: 21.5}, {0: "5701", 3: "Cel"},
                          {-2: "/3435/0/", 0: "2", 2: 41.0}])
SENML_JSON = json.dumps([{"bn": "/3303/0/", "n": "5700", "v": 21.5}, {"n": "5701", "vs": "Cel"},
                         {"bn": "/3435/0/", "n": "2", "v": 41.0}]).encode()
POINTS_PER_SEND = 3


class Peer(asyncio.DatagramProtocol):
    """The fuzzing device's socket: keeps every answer, acknowledges the server's own messages."""

    def __init__(self) -> None:
        self.answers: list[bytes] = []
        self.last_heard = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

    def datagram_received(self, data: bytes, addr) -> None:
        self.last_heard = asyncio.get_running_loop().time()
        self.answers.append(data)
        if len(data) >= 4 and (data[0] >> 4) & 0x03 == message.CON:
            mid = (data[2] << 8) | data[3]
            if message.is_request(data[1]):  # the server reading /3/0: not here
                token = data[4:4 + min(data[0] & 0x0F, 8)]
                self.transport.sendto(message.encode(message.ACK, message.NOT_FOUND, mid, token))
            else:  # a separate response
                self.transport.sendto(message.empty(message.ACK, mid))

    async def settle(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < BURST_DEADLINE_S:
            await asyncio.sleep(QUIET_S / 3)
            if loop.time() - max(self.last_heard, start) >= QUIET_S:
                return

    async def answer_to(self, mid: int, token: bytes, timeout: float = 10.0) -> int:
        """The response code for our request (piggybacked or separate)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for data in self.answers:
                try:
                    answer = message.decode(data)
                except message.MessageFormatError:
                    continue
                if answer.code >= 64 and (answer.mid == mid and answer.mtype == message.ACK
                                          or answer.token == token and answer.mtype != message.ACK):
                    return answer.code
            await asyncio.sleep(0.01)
        raise AssertionError(f"no answer to message {mid}")


def register(mid: int, token: bytes, endpoint: str = ENDPOINT, links: bytes = LINKS) -> bytes:
    options = [(message.URI_PATH, b"rd"), (message.CONTENT_FORMAT, message.uint(message.LINK_FORMAT))]
    options += [(message.URI_QUERY, q.encode()) for q in (f"ep={endpoint}", "lt=300", "lwm2m=1.1", "b=U")]
    return message.encode(message.CON, message.POST, mid, token, options, links)


def send(mid: int, token: bytes, payload: bytes = SENML_CBOR, content_format: int = message.SENML_CBOR) -> bytes:
    options = [(message.URI_PATH, b"dp"), (message.CONTENT_FORMAT, message.uint(content_format))]
    return message.encode(message.CON, message.POST, mid, token, options, payload)


def might_store(data: bytes) -> bool:
    """Whether a correct server could store points from this datagram: a POST to /dp whose payload
    is valid SenML in either format. Those are not sent as fuzz, so any row is a refused one's."""
    try:
        request = message.decode(data)
    except message.MessageFormatError:
        return False
    if request.code != message.POST or request.option_values(message.URI_PATH) != [b"dp"]:
        return False
    for decode in (senml.decode_cbor, senml.decode_json):
        try:
            decode(request.payload, now=datetime.now(UTC))
            return True
        except CodecError:
            pass
    return False


class Fuzz:
    """The hostile datagrams, each drawn from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.kinds = [self.random_bytes, self.truncated_header, self.flipped_register, self.flipped_send,
                      self.bad_options, self.bad_token_length, self.broken_senml_cbor,
                      self.broken_senml_json, self.bad_link_format, self.unstorable_values]

    def next(self) -> tuple[str, bytes]:
        kind = self.rng.choice(self.kinds)
        return kind.__name__, kind()

    def token(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, 8))

    def flip(self, data: bytes, flips: int) -> bytes:
        mutable = bytearray(data)
        for _ in range(flips):
            position = self.rng.randrange(len(mutable) * 8)
            mutable[position // 8] ^= 1 << (position % 8)
        return bytes(mutable)

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, 80))

    def truncated_header(self) -> bytes:
        whole = self.rng.choice([register(0, self.token()), send(0, self.token())])
        return whole[:self.rng.randint(0, min(len(whole) - 1, 20))]

    def flipped_register(self) -> bytes:
        return self.flip(register(0, self.token()), self.rng.randint(1, 4))

    def flipped_send(self) -> bytes:
        return self.flip(send(0, self.token(), *self.rng.choice([(SENML_CBOR, 112), (SENML_JSON, 110)])),
                         self.rng.randint(1, 4))

    def bad_options(self) -> bytes:
        rng = self.rng
        header = bytes((0x40 | 2, rng.choice([message.POST, message.GET, message.PUT]), 0, 0)) + b"tk"
        options = rng.choice([
            bytes((0xF0 | rng.randrange(15),)),  # delta nibble 15
            bytes((rng.randrange(15) << 4 | 0x0F,)),  # length nibble 15
            bytes((0xD0,)), bytes((0xE0, 0x01)), bytes((0x0D,)), bytes((0x0E, 0xFF)),  # cut-short extensions
            bytes((0xB0 | 0x0E, 0x10, 0x00)) + b"x" * 10,  # 4,365-byte value announced, 10 there
            bytes((0xB2,)) + b"dp" + bytes((0x12, 0x00, 0x70, 0x12, 0x00, 0x6E)),  # Content-Format twice
            bytes((0xB2,)) + b"dp" + bytes((0x13,)) + b"\x00" * 3,  # Content-Format of 3 bytes
            bytes((0xD1, 0xFF, 0x01)),  # an unknown critical option, 282
            bytes((0xB2,)) + b"rd" + bytes((0x41,)) + b"\x00",  # Uri-Query with a NUL
            rng.randbytes(rng.randint(1, 12)),
        ])
        tail = rng.choice([b"", b"\xff", b"\xff" + SENML_CBOR])
        return header + options + tail

    def bad_token_length(self) -> bytes:
        length = self.rng.randint(9, 15)
        base = self.rng.choice([send(0, b""), register(0, b"")])
        return bytes((base[0] & 0xF0 | length,)) + base[1:4] + self.rng.randbytes(self.rng.randint(0, 15)) + base[4:]

    def broken(self, payload: bytes, alphabet: bytes) -> bytes:
        """The payload cut short, or with a few bytes replaced from the alphabet."""
        if self.rng.random() < 0.5:
            return payload[:self.rng.randrange(len(payload))]
        mutable = bytearray(payload)
        for _ in range(self.rng.randint(1, 4)):
            mutable[self.rng.randrange(len(mutable))] = self.rng.choice(alphabet)
        return bytes(mutable)

    def broken_senml_cbor(self) -> bytes:
        payload = self.broken(SENML_CBOR, bytes(range(256))) or b"\x00"
        return send(0, self.token(), payload, message.SENML_CBOR)

    def broken_senml_json(self) -> bytes:
        payload = self.broken(SENML_JSON, b'{}[]",:\\0Nn\x00\xff') or b"["
        return send(0, self.token(), payload, message.SENML_JSON)

    def bad_link_format(self) -> bytes:
        links = bytearray(LINKS)
        for _ in range(self.rng.randint(1, 3)):
            links[self.rng.randrange(len(links))] = self.rng.choice(b'<>;,="/\x00\xff ')
        return register(0, self.token(), links=bytes(links))

    def unstorable_values(self) -> bytes:
        value = self.rng.choice([{3: "Acme\x00"}, {3: "x" * 5000}, {2: float("nan")}, {2: float("inf")},
                                 {2: 2**63}, {2: -(2**63) - 1}])
        payload = cbor2.dumps([{-2: "/3311/0/", 0: "5851", **value}])
        return send(0, self.token(), payload, message.SENML_CBOR)


async def stored(db, device_id=None) -> int:
    async with db.system_tx() as conn:
        if device_id is None:
            return await conn.fetchval("select count(*) from telemetry")
        return await conn.fetchval("select count(*) from telemetry where device_id = $1", device_id)


@pytest.fixture
async def listener(db) -> AsyncIterator[Listener]:
    """The suite's listener without the per-peer limit: one peer sends all 10,000 datagrams, and
    with the limit on most of them would be refused with 5.03 before any codec saw them."""
    async with open_listener(db, "::", 0, peer_rate=Rate(0, 0)) as running:
        yield running


async def test_hostile_datagrams_never_get_5_00_nor_store_anything(db, listener):
    city = await make_city(db, "seoul")
    device = await DeviceService(db).create_validated(
        city.principal, NewDevice(kind=DeviceKind.WASTE_BIN, endpoint=ENDPOINT, lat=37.5, lon=127.0))
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(Peer, remote_addr=("127.0.0.1", listener.port),
                                                          family=socket.AF_INET)
    mids = iter(range(1, 65536))
    valid_sends = 0

    async def valid(datagram_for) -> int:
        mid = next(mids)
        token = b"V" + mid.to_bytes(3, "big")
        peer.transport.sendto(datagram_for(mid, token))
        return await peer.answer_to(mid, token)

    try:
        assert await valid(register) == message.CREATED
        fuzz = Fuzz(random.Random(SEED))
        sent: collections.Counter[str] = collections.Counter()
        skipped = 0
        while sum(sent.values()) < DATAGRAMS:
            for _ in range(BURST):
                kind, data = fuzz.next()
                if len(data) >= 4:  # a fresh message ID each, so no datagram is another's duplicate
                    mid = next(mids)
                    data = data[:2] + mid.to_bytes(2, "big") + data[4:]
                if might_store(data):
                    skipped += 1
                    continue
                transport.sendto(data)
                sent[kind] += 1
            await peer.settle()
            # Re-register (a flipped bit may have made a De-register) and show a valid Send still works.
            assert await valid(register) == message.CREATED
            assert await valid(send) == message.CHANGED
            valid_sends += 1

        codes = collections.Counter()
        for data in peer.answers:
            if len(data) >= 2:
                codes[message.code_text(data[1])] += 1
        assert "5.00" not in codes, codes
        assert "5.03" not in codes, codes  # every datagram reached the codecs, none the peer limit
        assert all(count > 300 for count in sent.values()), sent
        assert skipped < DATAGRAMS // 10, skipped
        assert await stored(db, device.id) == valid_sends * POINTS_PER_SEND
        assert await stored(db) == valid_sends * POINTS_PER_SEND
        assert await valid(register) == message.CREATED
        assert await valid(lambda mid, token: send(mid, token, SENML_JSON, message.SENML_JSON)) == message.CHANGED
        assert await stored(db, device.id) == (valid_sends + 1) * POINTS_PER_SEND
    finally:
        transport.close()
