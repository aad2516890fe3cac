"""The coaps listener inside an aiocoap server context: requests over DTLS reach aiocoap's
resources and the fast path with the peer's identity, answers go back encrypted, and the
server's own requests reach a device through the session the device opened."""

from __future__ import annotations

import asyncio

import aiocoap
import pytest
from aiocoap import Code, Message, resource
from aiocoap.numbers.types import ACK, CON
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import REGISTRY

from fleet.access.limits import Rate
from protocols.coap import transport
from protocols.coap.dtls import PeerIdentity, PskCredentials, open_dtls_endpoint
from protocols.coap.outbound import RequestFailed
from protocols.coap.peerlimit import PeerLimit
from protocols.coap.secure import SecureEndpointAddress, open_coaps, secure_interface

IDENTITY, KEY = b"lamp-0001", bytes(range(16))


class Keys:
    def psk(self, identity: bytes):
        return (KEY, "credential of lamp-0001") if identity == IDENTITY else None

    def rpk(self, public_key_xy: bytes):
        return None


class WhoAmI(resource.Resource):
    async def render_get(self, request):
        claims = request.remote.authenticated_claims
        name = claims[0].identity if claims else b"nobody"
        return Message(payload=request.remote.scheme.encode() + b" " + name)


class Toy(resource.Site):
    """aiocoap's site plus the fast path's hook, as Fleet's LwM2M server offers it."""

    def __init__(self) -> None:
        super().__init__()
        self.add_resource(["whoami"], WhoAmI())
        self.fast: list[tuple[bytes, tuple]] = []

    def fast_post(self, path, content_format, payload, peer):
        if path != (b"dp",):
            return None
        self.fast.append((payload, peer))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Device(asyncio.DatagramProtocol):
    """A device speaking CoAP over DTLS: answers the server's requests with 2.05 "on"."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.answers: asyncio.Queue[Message] = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        message = Message.decode(data)
        if message.code.is_request():
            answer = Message(mtype=ACK, code=Code.CONTENT, payload=b"on")
            answer.mid, answer.token = message.mid, message.token
            self.transport.sendto(answer.encode())
        else:
            self.answers.put_nowait(message)

    def request(self, mid: int, code, path: str, payload: bytes = b"") -> None:
        message = Message(mtype=CON, code=code, uri_path=path.split("/"), payload=payload)
        message.mid, message.token = mid, mid.to_bytes(2, "big")
        self.transport.sendto(message.encode())

    async def answer(self) -> Message:
        async with asyncio.timeout(5):
            return await self.answers.get()


@pytest.fixture
async def served():
    site = Toy()
    context = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])
    listener = await open_coaps(context, "127.0.0.1", 0, Keys(), ec.generate_private_key(ec.SECP256R1()))
    transport_, device = await open_dtls_endpoint(asyncio.get_running_loop(), Device, ("127.0.0.1", listener.port),
                                                  PskCredentials(IDENTITY, KEY))
    yield site, context, listener, device
    transport_.close()
    await listener.close()
    await context.shutdown()


async def test_request_reaches_an_aiocoap_resource_with_the_peer_identity(served):
    site, context, listener, device = served
    device.request(1, Code.GET, "whoami")
    answer = await device.answer()
    assert (answer.code, answer.mid, answer.payload) == (Code.CONTENT, 1, b"coaps lamp-0001")
    assert REGISTRY.get_sample_value("fleet_coaps_handshakes_total", {"mode": "psk", "outcome": "ok"}) >= 1
    assert REGISTRY.get_sample_value("fleet_coaps_peers") >= 1


async def test_send_takes_the_fast_path_behind_dtls(served):
    site, context, listener, device = served
    device.request(2, Code.POST, "dp", b"\x80")
    answer = await device.answer()
    assert (answer.mtype, answer.code, answer.mid) == (ACK, Code.CHANGED, 2)
    # The peer is (host, port, secure): never the plain peer of the same address.
    assert site.fast == [(b"\x80", ("127.0.0.1", device.transport.get_extra_info("sockname")[1], True))]
    assert transport.fast_paths(context)[0].interface is listener.interface


async def test_interfaces_plain_and_secure_stay_apart(served):
    site, context, listener, device = served
    plain = transport.udp_interface(context)
    assert plain is not None and secure_interface(context) is listener.interface is not plain
    assert listener.interface.__dict__.get("_fleet_secure") is True and "_fleet_secure" not in plain.__dict__
    sockaddr = ("::ffff:127.0.0.1", 5684, 0, 0)
    assert SecureEndpointAddress(sockaddr, listener.interface).uri_base == "coaps://127.0.0.1"
    assert SecureEndpointAddress(sockaddr, listener.interface) != aiocoap.transports.udp6.UDP6EndpointAddress(
        sockaddr, plain)


async def test_server_requests_reach_the_device_through_its_session(served):
    site, context, listener, device = served
    device.request(3, Code.GET, "whoami")  # the device's first datagram opens the session
    await device.answer()
    sockaddr = ("::ffff:127.0.0.1", device.transport.get_extra_info("sockname")[1], 0, 0)
    remote = SecureEndpointAddress(sockaddr, listener.interface)
    assert remote.authenticated_claims == [PeerIdentity("psk", IDENTITY, "credential of lamp-0001")]
    request = Message(code=Code.GET, uri_path=["3", "0"])
    request.remote = remote
    async with asyncio.timeout(5):
        response = await context.request(request).response
    assert (response.code, response.payload) == (Code.CONTENT, b"on")
    outbound = transport.outbound_requests(listener.interface)
    async with asyncio.timeout(5):
        answer = await outbound.request(sockaddr, Code.GET, ("3", "0"))
    assert answer.payload == b"on"


async def test_request_to_an_address_without_a_session_fails_at_once(served):
    site, context, listener, device = served
    outbound = transport.outbound_requests(listener.interface)
    with pytest.raises(RequestFailed, match="no DTLS session"):
        async with asyncio.timeout(5):
            await outbound.request(("::ffff:127.0.0.1", 9, 0, 0), Code.GET, ("3", "0"))


async def test_malformed_coap_behind_dtls_gets_an_encrypted_4_00(served):
    site, context, listener, device = served
    device.transport.sendto(bytes((0x41, 0x01, 0x00, 0x07, 0xAA, 0xFF)))  # payload marker, no payload
    answer = await device.answer()
    assert (answer.code, answer.mid) == (Code.BAD_REQUEST, 7) and b"malformed" in answer.payload


async def test_peer_limit_holds_behind_dtls(served):
    site, context, listener, device = served
    transport.limit_peers(context, PeerLimit(Rate(per_s=0.001, burst=1)))
    assert listener.interface._fleet_peer_limit is transport.udp_interface(context)._fleet_peer_limit
    device.request(8, Code.GET, "whoami")
    assert (await device.answer()).code == Code.CONTENT
    device.request(9, Code.GET, "whoami")
    assert (await device.answer()).code == Code.SERVICE_UNAVAILABLE
