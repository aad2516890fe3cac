"""What the bundled tinydtls can take, on real UDP: PSK keys of 16 bytes and identities of up to
32 bytes; longer ones never complete a handshake, so Fleet must not accept them for storage."""

from __future__ import annotations

import asyncio

import pytest

from fleet.security.validation import parse_key_hex, psk_identity_errors
from protocols.coap.dtls import DtlsError, DtlsServer, PskCredentials, open_dtls_endpoint


class Keys:
    def __init__(self, identity: bytes, key: bytes) -> None:
        self.entry = identity, key

    def psk(self, identity: bytes):
        return (self.entry[1], "credential") if identity == self.entry[0] else None

    def rpk(self, public_key_xy: bytes):
        return None


class Device(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr) -> None:
        self.received.put_nowait(data)

    def error_received(self, exc) -> None:
        pass

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def handshake(identity: bytes, key: bytes) -> bool:
    """Whether a device holding (identity, key), which the server knows too, gets a session."""
    loop = asyncio.get_running_loop()
    server = DtlsServer(Keys(identity, key), None, on_plaintext=lambda data, address: server.send(data, address))
    listening, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    try:
        transport, device = await open_dtls_endpoint(loop, Device, listening.get_extra_info("sockname")[:2],
                                                     PskCredentials(identity, key))
        transport.sendto(b"ping")
        async with asyncio.timeout(10):
            done, _ = await asyncio.wait([asyncio.ensure_future(device.received.get()), device.lost],
                                         return_when=asyncio.FIRST_COMPLETED)
        transport.close()
        return not device.lost.done() or not isinstance(device.lost.result(), DtlsError)
    finally:
        listening.close()


@pytest.mark.parametrize(("identity", "key", "works"), [
    (b"i" * 32, bytes(16), True),
    (b"i" * 33, bytes(16), False),
    (b"lamp", bytes(32), False),
])
async def test_tinydtls_takes_16_byte_keys_and_32_byte_identities(identity, key, works):
    assert await handshake(identity, key) is works


def test_validation_refuses_what_the_listener_cannot_take():
    assert psk_identity_errors("i" * 32) == []
    assert psk_identity_errors("i" * 33)
    assert parse_key_hex("00" * 16)[1] == []
    assert parse_key_hex("00" * 32)[1]
