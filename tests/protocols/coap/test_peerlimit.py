"""The per-peer limit on real UDP: a flooding peer gets 5.03 with Max-Age, the others get through."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import cbor2
from aiocoap import Code, Message

from fleet.access.limits import Rate
from protocols.coap import message as coap
from protocols.coap.peerlimit import PeerLimit, service_unavailable
from protocols.lwm2m.listener import open_listener
from tests.conftest import make_city
from tests.protocols.test_lwm2m_server import provision, register, uri


def _send_datagram(mid: int) -> bytes:
    # CON POST /dp, token 0xAB, Content-Format 112, a SenML CBOR pack.
    return (bytes((0x41, 0x02, mid >> 8, mid & 0xFF, 0xAB, 0xB2)) + b"dp" + bytes((0x11, 112, 0xFF))
            + cbor2.dumps([{0: "/3303/0/5700", 2: 1.0}]))


def test_the_refusal_is_a_piggybacked_5_03_with_max_age():
    reply = service_unavailable(_send_datagram(0x1234), 3)
    message = Message.decode(reply)
    assert (message.code, message.mtype.name, message.mid, message.token) == (
        Code.SERVICE_UNAVAILABLE, "ACK", 0x1234, b"\xab")
    assert message.opt.max_age == 3 and message.payload == b"rate limited"
    assert Message.decode(service_unavailable(_send_datagram(1), 300)).opt.max_age == 300
    assert service_unavailable(b"\x50\x02\x00\x01", 1) is None  # NON: nothing to answer
    bare = b"\x41\x02\x00\x07\xab"  # a CON POST with no options: the reply is no longer than it
    assert len(service_unavailable(bare, 1)) <= len(bare) + 3
    assert Message.decode(service_unavailable(bare, 1)).payload == b""


def test_over_the_limit_a_request_is_refused_and_anything_else_dropped():
    limit = PeerLimit(Rate(per_s=1.0, burst=2))
    peer = ("10.0.0.1", 5683)
    assert limit.refuse(_send_datagram(1), peer, 0.0) is False
    assert limit.refuse(_send_datagram(2), peer, 0.0) is False
    assert Message.decode(limit.refuse(_send_datagram(3), peer, 0.0)).opt.max_age == 1
    assert limit.refuse(b"\x60\x00\x00\x04", peer, 0.0) is None  # an ACK over the limit
    assert limit.refuse(_send_datagram(5), ("10.0.0.1", 5684), 0.0) is False  # another peer
    assert limit.refuse(_send_datagram(6), peer, 1.0) is False


async def test_a_flooding_peer_gets_5_03_while_another_peers_send_is_committed(db, coap_client):
    city = await make_city(db, "seoul")
    device = await provision(db, city, "bin-calm")
    async with open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0),
                             peer_rate=Rate(per_s=5.0, burst=20)) as listener:
        assert (await register(coap_client, listener, "bin-calm")).code == Code.CREATED
        hostile = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        hostile.setblocking(False)
        try:
            for mid in range(300):
                hostile.sendto(_send_datagram(mid), ("127.0.0.1", listener.port))
            send = Message(code=Code.POST, uri=uri(listener, "/dp"), content_format=112,
                           payload=cbor2.dumps([{0: "/3303/0/5700", 2: 21.5}]))
            response = await coap_client.request(send).response
            assert response.code == Code.CHANGED, response.payload
            refusals = []
            loop = asyncio.get_running_loop()
            while len(refusals) < 200:
                reply = await asyncio.wait_for(loop.sock_recv(hostile, 2048), 5)
                message = Message.decode(reply)
                if message.code == Code.SERVICE_UNAVAILABLE:
                    refusals.append(message)
        finally:
            hostile.close()
        assert all(m.opt.max_age >= 1 for m in refusals)
    async with db.system_tx() as conn:
        stored = await conn.fetchval("select v_num from device_state where device_id = $1", device.id)
    assert stored == 21.5


def test_changing_ports_does_not_escape_the_limit_per_address():
    limit = PeerLimit(Rate(per_s=1.0, burst=2), Rate(per_s=1.0, burst=5))
    answers = [limit.refuse(_send_datagram(port), ("10.0.0.9", port), 0.0) for port in range(6)]
    assert answers[:5] == [False] * 5 and answers[5] is not False
    assert limit.refuse(_send_datagram(1), ("10.0.0.10", 1), 0.0) is False


async def test_a_retransmitted_send_passes_the_limit_and_gets_its_own_answer(db):
    """Over the limit, a retransmission of a Send the listener already took is answered from
    the duplicate cache (2.04), not 5.03: a 5.03 would end the exchange while its data commits,
    and the device would send the data again."""
    city = await make_city(db, "seoul")
    device = await provision(db, city, "bin-retrying")
    async with open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0),
                             peer_rate=Rate(per_s=0.01, burst=2)) as listener:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            server = ("127.0.0.1", listener.port)
            # The device's own socket registers and sends once: its whole burst of two.
            sock.sendto(coap.encode(coap.CON, coap.POST, 0x0100, b"\xcd", [
                *coap.path_options(coap.URI_PATH, "rd"), (coap.CONTENT_FORMAT, coap.uint(coap.LINK_FORMAT)),
                (coap.URI_QUERY, b"ep=bin-retrying"), (coap.URI_QUERY, b"lt=300")], b"</3303/0>"), server)
            assert (await _answer(sock, 0x0100)).code == Code.CREATED
            sock.sendto(_send_datagram(0x0200), server)
            assert (await _answer(sock, 0x0200)).code == Code.CHANGED
            # The bucket is empty now: a new request is refused, the retransmission is not.
            sock.sendto(_send_datagram(0x0201), server)
            assert (await _answer(sock, 0x0201)).code == Code.SERVICE_UNAVAILABLE
            sock.sendto(_send_datagram(0x0200), server)
            assert (await _answer(sock, 0x0200)).code == Code.CHANGED
        finally:
            sock.close()
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from telemetry where device_id = $1", device.id) == 1


async def _answer(sock: socket.socket, mid: int) -> Message:
    """The ACK for `mid`, past whatever else the listener sends meanwhile (its /3/0 read)."""
    loop = asyncio.get_running_loop()
    while True:
        message = Message.decode(await asyncio.wait_for(loop.sock_recv(sock, 2048), 10))
        if message.mtype.name == "ACK" and message.mid == mid:
            return message
