"""A coaps address that changes hands (a device's session ends, another device's handshake comes
from the same host and port, as when a NAT gives a quiet device's port to another): what the
first one was answered, and what the server asks of it, never reaches the second one, and the
second one cannot answer for the first."""

from __future__ import annotations

import asyncio

import aiocoap
import pytest
from aiocoap import Code, Message, resource
from aiocoap.numbers.types import CON
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.coap import transport as coap_transport
from protocols.coap.dtls import PskCredentials, open_dtls_endpoint
from protocols.coap.outbound import RequestFailed
from protocols.coap.secure import SecureEndpointAddress, open_coaps

KEYS = {b"lamp-0001": bytes(16), b"lamp-0002": bytes(range(16))}


class Keys:
    def psk(self, identity: bytes):
        return (KEYS[identity], identity.decode()) if identity in KEYS else None

    def rpk(self, public_key_xy: bytes):
        return None


class WhoAmI(resource.Resource):
    async def render_get(self, request):
        return Message(payload=request.remote.authenticated_claims[0].identity)


class Device(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.answers: asyncio.Queue[Message] = asyncio.Queue()
        self.requests: asyncio.Queue[Message] = asyncio.Queue()  # the server's, never answered here
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr) -> None:
        message = Message.decode(data)
        (self.requests if message.code.is_request() else self.answers).put_nowait(message)

    def connection_lost(self, exc) -> None:
        self.lost.set_result(exc)


async def session(port: int, identity: bytes, local_port: int = 0, mid: int = 1):
    """A device's session, opened by a GET /whoami: (transport, device, its sockaddr, the answer)."""
    transport, device = await open_dtls_endpoint(asyncio.get_running_loop(), Device, ("127.0.0.1", port),
                                                 PskCredentials(identity, KEYS[identity]),
                                                 local_addr=("127.0.0.1", local_port))
    request = Message(mtype=CON, code=Code.GET, uri_path=["whoami"])
    request.mid, request.token = mid, bytes([mid])
    transport.sendto(request.encode())
    async with asyncio.timeout(10):
        answer = await device.answers.get()
    return transport, device, ("::ffff:127.0.0.1", transport.get_extra_info("sockname")[1], 0, 0), answer.payload


async def who_am_i(port: int, identity: bytes, local_port: int) -> tuple[bytes, int]:
    """GET /whoami with message id 7 over a fresh session, then closed; (answer, the local port used)."""
    transport, device, sockaddr, answer = await session(port, identity, local_port, mid=7)
    transport.close()
    await device.lost
    return answer, sockaddr[1]


class Site(resource.Site):
    """/whoami through aiocoap, and Sends (POST /dp) through the fast path, as Fleet's LwM2M server."""

    def __init__(self) -> None:
        super().__init__()
        self.add_resource(["whoami"], WhoAmI())
        self.sends: list[tuple[bytes, object]] = []
        self.listener = None

    def fast_post(self, path, content_format, payload, peer):
        if path != (b"dp",):
            return None
        # Who sent it is asked of the DTLS server with the peer as the fast path names it.
        self.sends.append((payload, self.listener.server.identity_of(peer).identity))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@pytest.fixture
async def served():
    site = Site()
    context = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])
    listener = site.listener = await open_coaps(context, "127.0.0.1", 0, Keys(), ec.generate_private_key(ec.SECP256R1()))
    yield context, listener
    await listener.close()
    await context.shutdown()


async def test_another_device_on_the_same_address_is_not_answered_from_the_first_ones_exchange(served):
    context, listener = served
    first, local = await who_am_i(listener.port, b"lamp-0001", 0)
    assert first == b"lamp-0001"
    # Same host and port, same message id, within the exchange lifetime: not a duplicate.
    second, _ = await who_am_i(listener.port, b"lamp-0002", local)
    assert second == b"lamp-0002"


async def test_the_server_s_requests_to_a_device_never_reach_the_next_holder_of_its_address(served):
    context, listener = served
    first, first_device, sockaddr, _ = await session(listener.port, b"lamp-0001")
    remote = SecureEndpointAddress(sockaddr, listener.interface)  # as a registration keeps it
    outbound = coap_transport.outbound_requests(listener.interface)
    pending = outbound.request(sockaddr, Code.GET, ("3", "0"))  # lamp-0001 will not answer it
    async with asyncio.timeout(10):
        asked = await first_device.requests.get()
    first.close()
    await first_device.lost
    second, second_device, _, whoami = await session(listener.port, b"lamp-0002", sockaddr[1])
    assert whoami == b"lamp-0002"

    # lamp-0002 answers the outbound request it learnt the token of: not taken as lamp-0001's.
    forged = Message(mtype=CON, code=Code.CONTENT, payload=b"forged")
    forged.mid, forged.token = 0x4242, asked.token
    second.sendto(forged.encode())
    with pytest.raises(RequestFailed, match="another peer holds its address"):
        async with asyncio.timeout(10):
            await pending
    # aiocoap's request to lamp-0001 fails rather than going to lamp-0002's session.
    request = Message(code=Code.GET, uri_path=["3", "0"])
    request.remote = remote
    with pytest.raises(aiocoap.error.NetworkError):  # ENOTCONN: "no DTLS session with this peer"
        async with asyncio.timeout(10):
            await context.request(request).response
    assert second_device.requests.empty()
    second.close()


async def test_a_send_from_the_next_holder_of_an_address_is_not_taken_for_a_duplicate(served):
    context, listener = served
    site = context.serversite
    sends, local_port = [], 0
    for identity in (b"lamp-0001", b"lamp-0002"):
        transport, device, sockaddr, _ = await session(listener.port, identity, local_port)
        local_port = sockaddr[1]
        send = Message(mtype=CON, code=Code.POST, uri_path=["dp"], payload=identity)
        send.mid, send.token = 9, b"\x09"  # the same message ID from the same host and port
        transport.sendto(send.encode())
        async with asyncio.timeout(10):
            sends.append((await device.answers.get()).code)
        transport.close()
        await device.lost
    assert sends == [Code.CHANGED, Code.CHANGED]
    assert site.sends == [(b"lamp-0001", b"lamp-0001"), (b"lamp-0002", b"lamp-0002")]
