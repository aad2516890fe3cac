"""A device closing its DTLS transport from inside datagram_received (done with its exchange):
tinydtls is still handling that datagram, so its context must outlive the callback (this was a
segmentation fault)."""

from __future__ import annotations

import asyncio

from protocols.coap.dtls import DtlsServer, PskCredentials, open_dtls_endpoint


class Keys:
    def psk(self, identity: bytes):
        return (bytes(16), "credential") if identity == b"lamp" else None

    def rpk(self, public_key_xy: bytes):
        return None


class ClosesOnAnswer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: list[bytes] = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.answers.append(data)
        self.transport.close()

    def connection_lost(self, exc) -> None:
        self.lost.set_result(exc)


async def test_closing_the_transport_inside_datagram_received():
    loop = asyncio.get_running_loop()
    server = DtlsServer(Keys(), None, on_plaintext=lambda data, address: server.send(b"echo:" + data, address))
    listening, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    try:
        transport, device = await open_dtls_endpoint(loop, ClosesOnAnswer, listening.get_extra_info("sockname")[:2],
                                                     PskCredentials(b"lamp", bytes(16)))
        transport.sendto(b"ping")
        async with asyncio.timeout(10):
            assert await device.lost is None
        assert device.answers == [b"echo:ping"] and transport.engine._ctx is None  # freed after the callback
        transport.sendto(b"after close")  # nothing happens, nothing crashes
    finally:
        listening.close()
