"""The DTLS engines on real UDP: PSK and raw-public-key handshakes accepted or refused, replayed
records dropped, sends queued until the handshake finished, idle sessions evicted, handshakes
rate limited."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.coap.dtls import (DtlsError, DtlsServer, PeerIdentity, PskCredentials, RpkCredentials,
                                 open_dtls_endpoint, public_key_xy)

PSK_IDENTITY, PSK_KEY = b"lamp-0001", bytes(range(16))
SERVER_KEY = ec.generate_private_key(ec.SECP256R1())
DEVICE_KEY = ec.generate_private_key(ec.SECP256R1())


class Keys:
    """What the credential directory answers: one PSK and one raw public key."""

    def __init__(self) -> None:
        self.psks = {PSK_IDENTITY: (PSK_KEY, "credential of lamp-0001")}
        self.rpks = {public_key_xy(DEVICE_KEY): "credential of lamp-0002"}

    def psk(self, identity: bytes):
        return self.psks.get(identity)

    def rpk(self, public_key_xy: bytes):
        return self.rpks.get(public_key_xy)


class Device(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.errors: list[Exception] = []
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr) -> None:
        self.received.put_nowait(data)

    def error_received(self, exc) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    async def next(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.received.get()


class Echo:
    """A DtlsServer on 127.0.0.1 that answers every datagram with b"echo:" + it."""

    def __init__(self, **limits) -> None:
        self.received: list[tuple[bytes, tuple]] = []
        self.server = DtlsServer(Keys(), SERVER_KEY, on_plaintext=self._plaintext, **limits)

    def _plaintext(self, data: bytes, address) -> None:
        self.received.append((data, address))
        self.server.send(b"echo:" + data, address)

    async def start(self) -> tuple:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self.server, local_addr=("127.0.0.1", 0))
        return self.transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        self.transport.close()


@pytest.fixture
async def echo():
    server = Echo()
    server.address = await server.start()
    yield server
    server.close()


async def connect(address, credentials, **options):
    return await open_dtls_endpoint(asyncio.get_running_loop(), Device, address, credentials, **options)


async def refused(device: Device) -> Exception:
    async with asyncio.timeout(10):
        error = await device.lost
    assert isinstance(error, DtlsError) and device.errors and isinstance(device.errors[0], DtlsError)
    return error


async def test_psk_session_carries_datagrams_both_ways_and_names_the_credential(echo):
    transport, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
    transport.sendto(b"first, queued before the handshake")
    transport.sendto(b"second, queued too")
    assert await device.next() == b"echo:first, queued before the handshake"
    assert await device.next() == b"echo:second, queued too"
    local = transport.get_extra_info("sockname")
    assert echo.server.identity_of(local) == PeerIdentity("psk", PSK_IDENTITY, "credential of lamp-0001")
    assert echo.server.handshakes_ok["psk"] == 1 and echo.server.sessions == 1
    transport.sendto(b"after")
    assert await device.next() == b"echo:after"
    transport.close()
    assert await device.lost is None


async def test_wrong_psk_is_refused(echo):
    transport, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, bytes(16)))
    transport.sendto(b"never delivered")
    assert "handshake refused" in str(await refused(device))
    assert echo.received == [] and echo.server.handshakes_failed["psk"] == 1 and echo.server.peers == 0


async def test_unknown_psk_identity_is_refused(echo):
    transport, device = await connect(echo.address, PskCredentials(b"lamp-9999", PSK_KEY))
    assert "handshake refused" in str(await refused(device))
    assert echo.server.handshakes_failed["psk"] == 1 and echo.server.peers == 0
    assert echo.server.handshakes_deferred == 1  # held back once, in case it was being fetched


class Fetching(Keys):
    """A directory that misses a credential the first time it is asked, and has fetched it by
    the time the device's retransmission asks again."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[bytes] = set()

    def psk(self, identity: bytes):
        return super().psk(identity) if self._asked(identity) else None

    def rpk(self, public_key_xy: bytes):
        return super().rpk(public_key_xy) if self._asked(public_key_xy) else None

    def _asked(self, key: bytes) -> bool:
        seen = key in self.asked
        self.asked.add(key)
        return seen


@pytest.mark.parametrize("credentials", [PskCredentials(PSK_IDENTITY, PSK_KEY),
                                         RpkCredentials(DEVICE_KEY, SERVER_KEY.public_key())], ids=["psk", "rpk"])
async def test_credential_fetched_after_a_miss_is_accepted_on_the_retransmission(echo, credentials):
    echo.server.keys = Fetching()
    transport, device = await connect(echo.address, credentials)
    transport.sendto(b"hello")
    assert await device.next() == b"echo:hello"  # after ~2 s: the device retransmitted its flight
    assert echo.server.handshakes_deferred == 1 and not device.errors
    transport.close()


class SlowFetching(Keys):
    """A directory whose fetch after a miss takes longer than the device's first retransmission
    (a busy database): it says so, and has the credential by the retransmission after."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def psk(self, identity: bytes):
        self.asked += 1
        return super().psk(identity) if self.asked > 2 else None

    def looking_up(self, mode: str, identity: bytes) -> bool:
        return self.asked <= 2


async def test_a_handshake_waits_while_the_credential_is_still_being_fetched(echo):
    echo.server.keys = SlowFetching()
    transport, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
    transport.sendto(b"hello")
    async with asyncio.timeout(20):  # two retransmissions of the device's flight
        assert await device.received.get() == b"echo:hello"
    assert echo.server.handshakes_deferred == 2 and not device.errors
    transport.close()


async def test_registered_raw_public_key_is_accepted(echo):
    transport, device = await connect(echo.address, RpkCredentials(DEVICE_KEY, SERVER_KEY.public_key()))
    transport.sendto(b"hello")
    assert await device.next() == b"echo:hello"
    identity = echo.server.identity_of(transport.get_extra_info("sockname"))
    assert identity == PeerIdentity("rpk", public_key_xy(DEVICE_KEY), "credential of lamp-0002")
    assert echo.server.handshakes_ok["rpk"] == 1
    transport.close()


async def test_unknown_raw_public_key_is_refused(echo):
    stranger = ec.generate_private_key(ec.SECP256R1())
    transport, device = await connect(echo.address, RpkCredentials(stranger, SERVER_KEY.public_key()))
    assert "handshake refused" in str(await refused(device))
    assert echo.server.handshakes_failed["rpk"] == 1 and echo.server.peers == 0


async def test_device_refuses_a_server_with_another_key(echo):
    impostor = ec.generate_private_key(ec.SECP256R1()).public_key()
    transport, device = await connect(echo.address, RpkCredentials(DEVICE_KEY, impostor))
    await refused(device)
    assert echo.server.handshakes_ok["rpk"] == 0


async def test_replayed_record_is_dropped(echo):
    transport, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
    records: list[bytes] = []
    transport.sendto(b"once")
    assert await device.next() == b"echo:once"
    send = transport.engine._send
    transport.engine._send = lambda record: (records.append(record), send(record))
    transport.sendto(b"open the valve")
    assert await device.next() == b"echo:open the valve"
    transport._udp.sendto(records[-1])  # the same ciphertext again, from the same address
    transport.sendto(b"later")
    assert await device.next() == b"echo:later"  # loopback keeps order: the replay came first
    assert [data for data, _ in echo.received] == [b"once", b"open the valve", b"later"]
    transport.close()


def client_hello_with_cookie(cookie: bytes) -> bytes:
    body = b"\xfe\xfd" + bytes(32) + b"\x00" + bytes([len(cookie)]) + cookie + b"\x00\x02\xc0\xa8" + b"\x01\x00"
    handshake = b"\x01" + len(body).to_bytes(3, "big") + b"\x00\x01" + bytes(3) + len(body).to_bytes(3, "big") + body
    return b"\x16\xfe\xfd" + bytes(2) + (5).to_bytes(6, "big") + len(handshake).to_bytes(2, "big") + handshake


async def test_forged_client_hello_does_not_end_a_session(echo):
    transport, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
    transport.sendto(b"hello")
    await device.next()
    transport._udp.sendto(client_hello_with_cookie(b"not-ours"))  # as an off-path spoofer could
    transport.sendto(b"still there")
    assert await device.next() == b"echo:still there"
    assert echo.server.identity_of(transport.get_extra_info("sockname")) is not None
    assert echo.server.handshakes_ok["psk"] == 1 and echo.server.peers == 1
    transport.close()


async def test_idle_session_is_evicted_and_the_device_told(echo):
    transport, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
    transport.sendto(b"hello")
    await device.next()
    server = echo.server
    assert server.evict_idle(server.loop.time()) == 0
    assert server.evict_idle(server.loop.time() + server.idle_s + 1) == 1
    assert server.peers == 0 and server.identity_of(transport.get_extra_info("sockname")) is None
    async with asyncio.timeout(5):
        assert isinstance(await device.lost, DtlsError)  # close_notify: the device starts over
    assert server.send(b"to nobody", transport.get_extra_info("sockname")) is False


async def test_unfinished_handshake_is_closed_after_its_timeout(echo):
    transport, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
    send = transport.engine._send
    sent: list[bytes] = []
    # The ClientHello with the cookie goes out; then the device falls silent.
    transport.engine._send = lambda record: None if sent else (sent.append(record), send(record))
    server = echo.server
    await until(lambda: server._handshaking)
    server.handshake_timeout_s = 0
    server._sweep()
    assert server.peers == 0 and server.handshakes_failed["psk"] == 1
    transport.close()


async def test_forgetting_a_credential_closes_its_sessions(echo):
    transport, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
    transport.sendto(b"hello")
    await device.next()
    assert echo.server.forget_credential(lambda credential: credential == "credential of lamp-0001") == 1
    async with asyncio.timeout(5):
        await device.lost
    assert echo.server.peers == 0


@contextlib.asynccontextmanager
async def limited(**limits):
    """An Echo server with limits, and one device with a session on it."""
    echo = Echo(**limits)
    echo.address = await echo.start()
    try:
        first, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
        first.sendto(b"hello")
        await device.next()
        yield echo
        first.close()
    finally:
        echo.close()


async def until(condition) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def test_handshakes_over_the_rate_wait_for_the_retransmission():
    async with limited(psk_handshakes_per_s=1.0) as echo:
        second, other = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY), handshake_timeout_s=60)
        second.sendto(b"hello")
        await until(lambda: echo.server.handshakes_limited)
        assert echo.server.handshakes_ok["psk"] == 1 and other.received.empty()
        # tinydtls' retransmission timer resends the ClientHello (after 2 s); by then the
        # bucket has a token again
        assert await other.next() == b"echo:hello"
        assert echo.server.handshakes_ok["psk"] == 2
        second.close()


async def test_peers_over_the_cap_are_not_admitted():
    async with limited(max_peers=1) as echo:
        second, _ = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
        await until(lambda: echo.server.records_dropped)
        assert echo.server.peers == 1
        second.close()
