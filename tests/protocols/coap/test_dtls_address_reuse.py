"""A coaps address that changes hands (a device's session ends, another device's handshake comes
from the same host and port, as behind a NAT): what the first one was answered is not the
second one's. aiocoap's deduplication keys on the remote, so the remote must say who it is."""

from __future__ import annotations

import asyncio

import aiocoap
from aiocoap import Code, Message, resource
from aiocoap.numbers.types import CON
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.coap.dtls import PskCredentials, open_dtls_endpoint
from protocols.coap.secure import open_coaps

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
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr) -> None:
        self.answers.put_nowait(Message.decode(data))

    def connection_lost(self, exc) -> None:
        self.lost.set_result(exc)


async def who_am_i(port: int, identity: bytes, local_port: int) -> tuple[bytes, int]:
    """GET /whoami with message id 7 over a fresh session; (answer, the local port used)."""
    transport, device = await open_dtls_endpoint(asyncio.get_running_loop(), Device, ("127.0.0.1", port),
                                                 PskCredentials(identity, KEYS[identity]),
                                                 local_addr=("127.0.0.1", local_port))
    request = Message(mtype=CON, code=Code.GET, uri_path=["whoami"])
    request.mid, request.token = 7, b"\x07"
    transport.sendto(request.encode())
    async with asyncio.timeout(10):
        answer = await device.answers.get()
    local = transport.get_extra_info("sockname")[1]
    transport.close()
    await device.lost
    return answer.payload, local


async def test_another_device_on_the_same_address_is_not_answered_from_the_first_ones_exchange():
    site = resource.Site()
    site.add_resource(["whoami"], WhoAmI())
    context = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])
    listener = await open_coaps(context, "127.0.0.1", 0, Keys(), ec.generate_private_key(ec.SECP256R1()))
    try:
        first, local = await who_am_i(listener.port, b"lamp-0001", 0)
        assert first == b"lamp-0001"
        # Same host and port, same message id, within the exchange lifetime: not a duplicate.
        second, _ = await who_am_i(listener.port, b"lamp-0002", local)
        assert second == b"lamp-0002"
    finally:
        await listener.close()
        await context.shutdown()
