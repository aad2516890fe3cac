"""The DTLS engines against what devices and forgers do: a device closing its transport from
inside datagram_received (tinydtls is still handling that datagram: its context must outlive the
callback; this was a segmentation fault), and records from a session's address that do not
decrypt (they must not count as the peer's activity)."""

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



class Stays(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        self.answers.put_nowait(data)


async def test_a_forged_record_from_a_session_s_address_does_not_keep_it_alive():
    loop = asyncio.get_running_loop()
    server = DtlsServer(Keys(), None, on_plaintext=lambda data, address: server.send(b"echo:" + data, address))
    handled: asyncio.Queue[bytes] = asyncio.Queue()
    receive = server.datagram_received

    def spied(data, address) -> None:
        receive(data, address)
        handled.put_nowait(data)

    server.datagram_received = spied
    listening, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    transport, device = await open_dtls_endpoint(loop, Stays, listening.get_extra_info("sockname")[:2],
                                                 PskCredentials(b"lamp", bytes(16)))
    try:
        transport.sendto(b"ping")
        async with asyncio.timeout(10):
            assert await device.answers.get() == b"echo:ping"
        peer = next(iter(server._peers.values()))
        peer.seen = seen = peer.seen - 1000.0  # idle for a while
        # Application data and an alert in epoch 1 from the device's address, not under its keys.
        for content_type in (23, 21):
            forged = bytes([content_type, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 99, 0, 24]) + bytes(24)
            transport._udp.sendto(forged)
            async with asyncio.timeout(10):
                while await handled.get() != forged:
                    pass
            assert peer.seen == seen and server.records_in == 1
        transport.sendto(b"ping again")
        async with asyncio.timeout(10):
            assert await device.answers.get() == b"echo:ping again"
        assert peer.seen > seen and server.records_in == 2  # seen by its own records
    finally:
        transport.close()
        listening.close()
