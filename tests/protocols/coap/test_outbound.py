"""The outbound fast path on real UDP: a scripted device answers piggybacked, separately, late,
with a Reset or not at all, and the requests end as RFC 7252 says they must."""

from __future__ import annotations

import asyncio
import collections
import socket

import aiocoap
import pytest
from aiocoap import Code, Message, resource
from aiocoap.numbers.constants import TransportTuning
from aiocoap.transports.udp6 import UDP6EndpointAddress

from protocols.coap import transport
from protocols.coap.outbound import Answer, OutboundRequests, RequestFailed, decode_answer, encode_request

_CON, _NON, _ACK, _RST = 0, 1, 2, 3


class QuickTuning(TransportTuning):
    """RFC 7252's rules at a tenth of the time, so that timeouts are quick to test."""

    ACK_TIMEOUT = 0.1
    ACK_RANDOM_FACTOR = 1.0
    MAX_RETRANSMIT = 2
    MAX_LATENCY = 0.5
    PROCESSING_DELAY = 0.1


def header(data: bytes) -> tuple[int, int, int, bytes]:
    """(type, code, message id, token) of a datagram."""
    return (data[0] >> 4) & 3, data[1], int.from_bytes(data[2:4], "big"), data[4:4 + (data[0] & 0x0F)]


def reply(mtype: int, code: int, mid: int, token: bytes = b"", payload: bytes = b"",
          content_format: int | None = None) -> bytes:
    data = bytes((0x40 | mtype << 4 | len(token), code)) + mid.to_bytes(2, "big") + token
    if content_format is not None:
        data += bytes((0xC1, content_format))  # option 12, one byte
    return data + (b"\xff" + payload if payload else b"")


class ScriptedDevice(asyncio.DatagramProtocol):
    """A device whose answer to each request the test decides."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple]] = asyncio.Queue()

    def connection_made(self, transport_) -> None:
        self.transport = transport_

    def datagram_received(self, data: bytes, addr) -> None:
        self.received.put_nowait((data, addr))

    async def next(self, timeout: float = 3.0) -> tuple[bytes, tuple]:
        return await asyncio.wait_for(self.received.get(), timeout)

    def send(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)


@pytest.fixture
async def server():
    """A listener-like aiocoap context on the loopback, with the outbound fast path at QuickTuning."""
    transport.install()
    context = await aiocoap.Context.create_server_context(resource.Site(), bind=("::1", 0), transports=["udp6"])
    interface = transport.udp_interface(context)
    interface._fleet_outbound = OutboundRequests(interface, QuickTuning())
    try:
        yield interface._fleet_outbound
    finally:
        interface._fleet_outbound.close()
        await context.shutdown()


@pytest.fixture
async def device():
    loop = asyncio.get_running_loop()
    transport_, protocol = await loop.create_datagram_endpoint(ScriptedDevice, local_addr=("::1", 0))
    protocol.address = transport_.get_extra_info("sockname")[:2]
    try:
        yield protocol
    finally:
        transport_.close()


def sockaddr(device: ScriptedDevice) -> tuple:
    return (device.address[0], device.address[1], 0, 0)


async def test_piggybacked_answer(server, device):
    pending = server.request(sockaddr(device), int(Code.PUT), ("3416", "0", "1"), content_format=0, payload=b"30")
    data, addr = await device.next()
    request = Message.decode(data)
    assert (request.mtype.value, request.code, request.opt.uri_path, request.payload) == (
        _CON, Code.PUT, ("3416", "0", "1"), b"30")
    assert request.opt.content_format == 0
    device.send(reply(_ACK, int(Code.CHANGED), request.mid, request.token), addr)
    answer = await pending
    assert answer == Answer(int(Code.CHANGED), None, b"", False) and answer.successful
    assert server.pending == 0


async def test_lost_request_is_retransmitted_with_the_same_message_id(server, device):
    pending = server.request(sockaddr(device), int(Code.GET), ("3", "0"), accept=112)
    first, _ = await device.next()
    again, addr = await device.next()  # the first went unanswered: ACK_TIMEOUT later, the same CON
    assert again == first
    _, _, mid, token = header(again)
    device.send(reply(_ACK, int(Code.CONTENT), mid, token, b"\x81", content_format=112), addr)
    answer = await pending
    assert (answer.code, answer.content_format, answer.payload) == (int(Code.CONTENT), 112, b"\x81")
    assert server.retransmitted == 1


async def test_empty_ack_then_separate_response_acknowledged_also_when_repeated(server, device):
    pending = server.request(sockaddr(device), int(Code.POST), ("3", "0", "4"))
    data, addr = await device.next()
    _, _, mid, token = header(data)
    device.send(reply(_ACK, 0, mid), addr)
    # Acknowledged: no retransmission comes, whatever time passes.
    with pytest.raises(TimeoutError):
        await device.next(timeout=0.35)
    assert not pending.done()
    device.send(reply(_CON, int(Code.CHANGED), 4242, token), addr)
    ack, _ = await device.next()
    assert header(ack) == (_ACK, 0, 4242, b"")
    assert (await pending).code == int(Code.CHANGED)
    device.send(reply(_CON, int(Code.CHANGED), 4242, token), addr)  # our ACK was lost: it comes again
    ack, _ = await device.next()
    assert header(ack) == (_ACK, 0, 4242, b"")


async def test_separate_non_response(server, device):
    pending = server.request(sockaddr(device), int(Code.PUT), ("3416", "0", "1"), payload=b"1")
    data, addr = await device.next()
    _, _, mid, token = header(data)
    device.send(reply(_ACK, 0, mid), addr)
    device.send(reply(_NON, int(Code.CHANGED), 7, token), addr)
    assert (await pending).code == int(Code.CHANGED)


async def test_error_answer_is_an_answer(server, device):
    pending = server.request(sockaddr(device), int(Code.PUT), ("3416", "0", "1"), payload=b"300")
    data, addr = await device.next()
    _, _, mid, token = header(data)
    device.send(reply(_ACK, int(Code.BAD_REQUEST), mid, token, b"out of range"), addr)
    answer = await pending
    assert not answer.successful and answer.payload == b"out of range"


async def test_reset_fails_at_once(server, device):
    pending = server.request(sockaddr(device), int(Code.GET), ("3", "0"))
    data, addr = await device.next()
    device.send(reply(_RST, 0, header(data)[2]), addr)
    with pytest.raises(RequestFailed, match="reset"):
        await pending


async def test_silent_device_times_out_after_max_retransmit(server, device):
    pending = server.request(sockaddr(device), int(Code.GET), ("3", "0"))
    with pytest.raises(RequestFailed, match="timeout"):
        await asyncio.wait_for(pending, 5)
    copies = 0
    while not device.received.empty():
        device.received.get_nowait()
        copies += 1
    assert copies == 1 + QuickTuning.MAX_RETRANSMIT
    assert server.pending == 0


async def test_no_separate_response_after_empty_ack_times_out(server, device):
    pending = server.request(sockaddr(device), int(Code.GET), ("3", "0"))
    data, addr = await device.next()
    device.send(reply(_ACK, 0, header(data)[2]), addr)
    with pytest.raises(RequestFailed, match="empty ACK"):
        await asyncio.wait_for(pending, 5)


async def test_closed_port_fails_fast_through_icmp(server):
    probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    probe.bind(("::1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    pending = server.request(("::1", closed_port, 0, 0), int(Code.GET), ("3", "0"))
    # Not "timeout": the ICMP error ended it, before any retransmission.
    with pytest.raises(RequestFailed, match="unreachable"):
        await asyncio.wait_for(pending, 5)
    assert server.retransmitted == 0


async def test_answers_to_other_requests_go_to_aiocoap(server, device):
    """A stray ACK or a response with a token we never used is not ours to take."""
    assert not server.offer(reply(_ACK, int(Code.CHANGED), 1, b"\x01"), ("::1", 9, 0, 0))
    server.request(sockaddr(device), int(Code.GET), ("3", "0"))
    data, _ = await device.next()
    _, _, mid, token = header(data)
    assert not server.offer(reply(_ACK, 0, mid + 1), (*device.address, 0, 0))
    assert not server.offer(reply(_CON, int(Code.CONTENT), 5, token + b"x"), (*device.address, 0, 0))
    assert not server.offer(data, (*device.address, 0, 0))  # a request, not an answer


async def test_cancelled_wait_stops_retransmissions(server, device):
    pending = server.request(sockaddr(device), int(Code.GET), ("3", "0"))
    await device.next()
    pending.cancel()
    await asyncio.sleep(0)
    assert server.pending == 0
    with pytest.raises(TimeoutError):
        await device.next(timeout=0.3)


async def test_close_fails_what_is_pending(server, device):
    pending = server.request(sockaddr(device), int(Code.GET), ("3", "0"))
    server.close()
    with pytest.raises(RequestFailed, match="closing"):
        await pending
    with pytest.raises(RequestFailed, match="closing"):
        await server.request(sockaddr(device), int(Code.GET), ("3", "0"))


@pytest.mark.parametrize("path", [("3416", "0", "1"), ("a" * 12, "b" * 13, "c" * 300), ()])
def test_encoded_request_is_what_aiocoap_reads(path):
    data = encode_request(0xBEEF, b"\x01\x02\x03", int(Code.PUT), path, content_format=11542, accept=112,
                          payload=b"\x00\x01")
    message = Message.decode(data)
    assert (message.mid, message.token, message.code) == (0xBEEF, b"\x01\x02\x03", Code.PUT)
    assert message.opt.uri_path == path
    assert (message.opt.content_format, message.opt.accept, message.payload) == (11542, 112, b"\x00\x01")


def test_encoded_request_without_payload_or_options():
    message = Message.decode(encode_request(1, b"", int(Code.GET), ("3",)))
    assert (message.opt.uri_path, message.opt.content_format, message.payload) == (("3",), None, b"")


def test_decoded_answer_matches_aiocoap_encoding():
    response = Message(code=Code.CONTENT, payload=b"x" * 20, content_format=11543, etag=b"12345678")
    response.mtype, response.mid, response.token = aiocoap.ACK, 9, b"\x07"
    response.opt.block2 = (0, True, 6)
    answer = decode_answer(response.encode())
    assert answer == Answer(int(Code.CONTENT), 11543, b"x" * 20, True)


@pytest.mark.parametrize("data", [b"\x60\x44\x00\x01\xd1", b"\x60\x44\x00\x01\xf0", b"\x61\x44\x00\x01",
                                  b"\x60\x44\x00\x01\x15"])
def test_malformed_answer_is_none(data):
    assert decode_answer(data) is None


async def test_interleaved_requests_each_retransmit_on_their_own_schedule(server, device):
    first = server.request(sockaddr(device), int(Code.GET), ("3", "0"))
    await asyncio.sleep(QuickTuning.ACK_TIMEOUT * 1.5)  # the first has been retransmitted once
    second = server.request(sockaddr(device), int(Code.GET), ("3", "1"))
    for pending in (first, second):
        with pytest.raises(RequestFailed, match="timeout"):
            await asyncio.wait_for(pending, 5)
    sent = collections.Counter()
    while not device.received.empty():
        data, _ = device.received.get_nowait()
        sent[Message.decode(data).opt.uri_path] += 1
    assert sent == {("3", "0"): 1 + QuickTuning.MAX_RETRANSMIT, ("3", "1"): 1 + QuickTuning.MAX_RETRANSMIT}
    assert server.pending == 0


async def test_message_ids_count_per_device(server, device):
    """A busy node must not come back to a device's message ID within EXCHANGE_LIFETIME:
    however many other devices it talks to, each device's IDs follow on from its own."""
    mids = []
    for n in range(3):
        pending = server.request(sockaddr(device), int(Code.GET), ("3", "0"))
        data, addr = await device.next()
        _, _, mid, token = header(data)
        mids.append(mid)
        for other in range(50):  # traffic to other devices in between
            server.request(("::1", 9, 0, 0), int(Code.GET), ("3", str(other))).cancel()
        device.send(reply(_ACK, int(Code.CONTENT), mid, token), addr)
        await pending
    assert mids == [mids[0], (mids[0] + 1) & 0xFFFF, (mids[0] + 2) & 0xFFFF]


async def test_aiocoap_requests_take_their_message_ids_from_the_same_counter(server, device):
    """An Observe (through aiocoap) right after a Read (fast path) must not reuse the Read's
    message ID: the device would answer it from its duplicate cache."""
    pending = server.request(sockaddr(device), int(Code.GET), ("3", "0"))
    data, addr = await device.next()
    _, _, read_mid, token = header(data)
    device.send(reply(_ACK, int(Code.CONTENT), read_mid, token), addr)
    await pending
    observe = Message(code=Code.GET, uri_path=("3", "0"), observe=0)
    observe.remote = UDP6EndpointAddress(sockaddr(device), server.interface)
    aiocoap_request = server.interface._ctx.token_manager.context.request(observe)
    data, addr = await device.next()
    _, _, observe_mid, _ = header(data)
    assert observe_mid == (read_mid + 1) & 0xFFFF
    aiocoap_request.observation.cancel()
