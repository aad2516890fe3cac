"""LwM2M over coaps:// on real UDP and PostgreSQL: endpoint binding, everything a device does over
coap:// done over DTLS (Register, Send, Read, Write, Observe, firmware blocks), spoofing, and the
bootstrap server rotating a device's key."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import cbor2
import httpx
import pytest
from aiocoap import Code, Message
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from structlog.testing import capture_logs

from fleet.objectmodel import ResourcePath
from fleet.security.crypto import server_key
from fleet.security.models import SetPsk, SetRpk
from fleet.security.service import SecurityService
from protocols.coap import message, transport
from protocols.coap.dtls import PskCredentials, RpkCredentials, public_key_xy
from protocols.lwm2m.bootstrap import PSK_MODE, RPK_MODE, SHORT_SERVER_ID
from protocols.lwm2m.downlink import DeviceAddress, DeviceRequestFailed
from protocols.lwm2m import listener as listener_module
from protocols.lwm2m.listener import Listener, open_listener
from tests.conftest import TEST_SECURITY, make_city
from tests.protocols.lwm2m.dtlsdevice import DtlsDevice
from tests.protocols.lwm2m.firmware_rows import downloading, store_image
from tests.protocols.lwm2m.rawdevice import CON, GET, LOCATION_PATH, POST, TLV, URI_PATH, Datagram, decode, encode
from tests.protocols.test_commands import light

CREATED, CHANGED, CONTENT, FORBIDDEN = 0x41, 0x44, 0x45, 0x83
PACK = cbor2.dumps([{-2: "/3/0/", 0: "9", 2: 87.0}])


@pytest.fixture
async def listener(db) -> AsyncIterator[Listener]:
    async with open_listener(db, "::", 0, coaps_port=0, security=TEST_SECURITY,
                             expiry_grace=timedelta(seconds=0)) as running:
        yield running


@pytest.fixture
async def city(db):
    return await make_city(db, "coapscity", allow_nosec_devices=False)


async def keyed(db, city, endpoint: str, *, purpose: str = "operational") -> tuple[object, PskCredentials]:
    """A streetlight holding a PSK of `purpose`; its credentials as the device holds them."""
    device = await light(db, city, endpoint)
    key = os.urandom(16)
    identity = f"{endpoint}-{purpose}"
    await SecurityService(db, TEST_SECURITY).set_credential(
        city.principal, device.id, SetPsk(identity=identity, key_hex=key.hex(), purpose=purpose))
    return device, PskCredentials(identity.encode(), key)


async def until(condition, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def heard(listener: Listener, identity: bytes, *, present: bool = True) -> None:
    """Until the coaps listener's directory holds (or no longer holds) the identity."""
    await until(lambda: (listener.directory.psk(identity) is not None) is present)


async def connected(listener, endpoint: str, credentials: PskCredentials, **values) -> DtlsDevice:
    await heard(listener, credentials.identity)
    device = DtlsDevice(endpoint, (TLV,), values={"/3/0/0": "Acme", "/3/0/9": 80, **values})
    await device.start_dtls(listener.coaps_port, credentials)
    return device


async def handshake_refused(listener, endpoint: str, credentials: PskCredentials) -> None:
    """A device with these credentials tries to register: its DTLS handshake fails."""
    device = DtlsDevice(endpoint, (TLV,))
    await device.start_dtls(listener.coaps_port, credentials)
    try:
        registering = asyncio.create_task(device.register_at(listener.coaps_port))
        async with asyncio.timeout(15):
            await device.handshake_failed.wait()
        registering.cancel()
    finally:
        device.stop()


async def bootstrapped(device: DtlsDevice) -> dict:
    """Asks for a bootstrap, waits for its Finish and stops: what the server wrote, by path."""
    try:
        assert (await device.request_bootstrap()).code == CHANGED
        async with asyncio.timeout(10):
            await device.finished.wait()
    finally:
        device.stop()
    return device.written


async def registration(db, endpoint: str):
    async with db.system_tx() as conn:
        return await conn.fetchrow("select * from registrations where endpoint = $1", endpoint)


async def test_a_psk_device_does_over_coaps_what_it_does_over_coap(db, listener, city):
    lamp, credentials = await keyed(db, city, "lamp-dtls")
    device = await connected(listener, "lamp-dtls", credentials)
    try:
        assert (await device.register_at(listener.coaps_port)).code == CREATED
        row = await registration(db, "lamp-dtls")
        assert row["secure"] is True
        address = DeviceAddress(row["address"], row["port"], secure=True)

        # Send, through the fast path behind DTLS: 2.04 only once committed.
        answered = sum(fast.answered for fast in transport.fast_paths(listener.context))
        assert (await device.send(PACK)).code == CHANGED
        assert sum(fast.answered for fast in transport.fast_paths(listener.context)) == answered + 1
        async with db.system_tx() as conn:
            assert await conn.fetchval("select count(*) from telemetry where device_id = $1 and path = '/3/0/9'",
                                       lamp.id) >= 1

        # Read, Write and Observe, from the server, over the device's DTLS session.
        readings = await listener.client.read(address, ResourcePath(3, 0, 0), accept=TLV)
        assert [r.value for r in readings] == ["Acme"]
        await listener.client.write(address, ResourcePath(3, 0, 14), "+09:00")
        assert any(r.code == 3 and r.path == "/3/0/14" for r in device.requests)
        notified: list = []

        async def on_readings(readings) -> None:
            notified.extend(readings)

        first, observation = await listener.client.observe(address, ResourcePath(3, 0, 9), on_readings,
                                                          device_id=lamp.id)
        assert [r.value for r in first] == [80]
        follower = asyncio.create_task(observation.follow())
        device.values["/3/0/9"] = 42
        assert (await device.notify("/3/0/9")).mtype == 2  # acknowledged
        await until(lambda: [r.value for r in notified] == [42])
        follower.cancel()
    finally:
        device.stop()


async def test_a_firmware_block_download_over_coaps(db, listener, city):
    lamp, credentials = await keyed(db, city, "lamp-fw")
    image = os.urandom(3000)
    token = await downloading(db, city.tenant_id, lamp.id, await store_image(db, city.tenant_id, image))
    device = await connected(listener, "lamp-fw", credentials)
    try:
        received = b""
        for number in range(3):
            options = [(URI_PATH, b"fw"), (URI_PATH, token.encode()),
                       (message.BLOCK2, message.block_value(number, False, 1024))]
            answer = await device.exchange(Datagram(CON, GET, device.mid(), os.urandom(2), options, b""))
            assert answer.code == CONTENT
            received += answer.payload
        assert received == image
    finally:
        device.stop()


async def test_a_wrong_key_is_refused(db, listener, city):
    _, credentials = await keyed(db, city, "lamp-wrong")
    device = await connected(listener, "lamp-wrong", PskCredentials(credentials.identity, os.urandom(16)))
    try:
        registering = asyncio.create_task(device.register_at(listener.coaps_port))
        async with asyncio.timeout(15):
            await device.handshake_failed.wait()
        registering.cancel()
        assert await registration(db, "lamp-wrong") is None
    finally:
        device.stop()


async def test_a_device_holding_x_key_cannot_register_as_y(db, listener, city):
    _, credentials = await keyed(db, city, "lamp-x")
    await light(db, city, "lamp-y")
    device = await connected(listener, "lamp-y", credentials)  # X's key, Y's name
    try:
        answer = await device.register_at(listener.coaps_port)
        assert answer.code == FORBIDDEN
        assert b"registers only as itself" in answer.payload
        assert await registration(db, "lamp-y") is None
    finally:
        device.stop()


async def test_an_rpk_device_registers_as_itself(db, listener, city, api_url):
    lamp = await light(db, city, "lamp-rpk")
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    await SecurityService(db, TEST_SECURITY).set_credential(city.principal, lamp.id, SetRpk(public_key=pem))
    await until(lambda: listener.directory.rpk(public_key_xy(private_key)) is not None)
    device = DtlsDevice("lamp-rpk", (TLV,), values={"/3/0/0": "Acme"})
    await device.start_dtls(listener.coaps_port, RpkCredentials(private_key, server_key(TEST_SECURITY).public_key()))
    try:
        assert (await device.register_at(listener.coaps_port)).code == CREATED
        async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {city.key}"}) as client:
            shown = (await client.get(f"/api/v1/devices/{lamp.id}/registration")).json()
        assert (shown["endpoint"], shown["secure"]) == ("lamp-rpk", True)
    finally:
        device.stop()


async def test_a_plain_datagram_from_a_secure_devices_address_is_not_the_device(db, listener, city):
    lamp, credentials = await keyed(db, city, "lamp-spoofed")
    device = await connected(listener, "lamp-spoofed", credentials)
    assert (await device.register_at(listener.coaps_port)).code == CREATED
    port = (await registration(db, "lamp-spoofed"))["port"]
    device.stop()  # its address is free for a spoofer to send plain datagrams from
    spoofer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await until(lambda: _bound(spoofer, port))  # once the device's socket is closed
        spoofer.settimeout(5)
        send = Datagram(CON, 2, 4321, b"spoof", [(URI_PATH, b"dp"), (12, b"\x70")], PACK)
        spoofer.sendto(encode(send), ("127.0.0.1", listener.port))
        answer = decode(await asyncio.to_thread(spoofer.recv, 2048))
        assert answer.code == FORBIDDEN
    finally:
        spoofer.close()
    async with db.system_tx() as conn:
        # (What it reported itself, /3/0 read after its Register, is there; the spoofed 87 is not.)
        assert await conn.fetchval("select count(*) from telemetry where device_id = $1 and v_num = 87",
                                   lamp.id) == 0


async def test_another_device_at_a_registered_devices_address_sends_only_as_itself(db, listener, city):
    """A NAT hands a registered device's address and port on to another device with a key of its
    own: before that one registers, its Sends are not the first device's."""
    first, first_key = await keyed(db, city, "lamp-first")
    _, second_key = await keyed(db, city, "lamp-second")
    device = await connected(listener, "lamp-first", first_key)
    assert (await device.register_at(listener.coaps_port)).code == CREATED
    port = (await registration(db, "lamp-first"))["port"]
    device.stop()
    await heard(listener, second_key.identity)
    second = DtlsDevice("lamp-second", (TLV,))
    async with asyncio.timeout(10):
        while True:  # once the first device's socket is closed
            try:
                await second.start_dtls(listener.coaps_port, second_key, local_port=port)
                break
            except OSError:
                await asyncio.sleep(0.02)
    try:
        # The first device's session is still cached for that peer: the fast path is where the
        # Send is looked at first, and it must decline it (render() then refuses it).
        assert listener.server.sessions.get(("127.0.0.1", port, True)).device_id == first.id
        answered = sum(fast.answered for fast in transport.fast_paths(listener.context))
        assert (await second.send(PACK)).code == FORBIDDEN
        assert sum(fast.answered for fast in transport.fast_paths(listener.context)) == answered
        # The other way: what the server asks of the first device never reaches the second.
        address = DeviceAddress.of(await listener.server.registrations.at_address("127.0.0.1", port, True))
        assert address.device_id == first.id
        with pytest.raises(DeviceRequestFailed, match="another device's DTLS session"):
            await listener.client.read(address, ResourcePath(3, 0, 0), accept=TLV)
        with pytest.raises(DeviceRequestFailed, match="another device's DTLS session"):
            await listener.client.write(address, ResourcePath(3, 0, 14), "+09:00")
        assert second.requests == []
    finally:
        second.stop()
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from telemetry where device_id = $1 and v_num = 87",
                                   first.id) == 0


async def test_a_device_whose_pending_key_was_activated_sends_and_updates_on_the_same_session(db, listener, city):
    """Its session holds the credential as it was at the handshake (pending); the Register made
    it active: who the session is is its credential's id, not that state."""
    lamp = await light(db, city, "lamp-activated")
    issued = await SecurityService(db, TEST_SECURITY).issue_operational_psk(city.tenant_id, lamp.id)
    assert issued.credential.state == "pending"
    device = await connected(listener, "lamp-activated", PskCredentials(issued.identity.encode(), issued.key))
    try:
        registered = await device.register_at(listener.coaps_port)
        assert registered.code == CREATED
        await until(lambda: listener.directory.psk(issued.identity.encode())[1].state == "active")
        session = ("::ffff:127.0.0.1", device.transport.get_extra_info("sockname")[1])
        assert listener.coaps.server.identity_of(session).credential.state == "pending"  # as at the handshake

        answered = sum(fast.answered for fast in transport.fast_paths(listener.context))
        assert (await device.send(PACK)).code == CHANGED  # the fast path
        assert sum(fast.answered for fast in transport.fast_paths(listener.context)) == answered + 1

        location = [(URI_PATH, value) for number, value in registered.options if number == LOCATION_PATH]
        update = Datagram(CON, POST, device.mid(), os.urandom(4), location, b"")  # /rd/{id}
        assert (await device.exchange(update)).code == CHANGED

        listener.server.sessions.forget_device(lamp.id)  # the slow path: render() and the database
        assert (await device.send(PACK)).code == CHANGED
        assert sum(fast.answered for fast in transport.fast_paths(listener.context)) == answered + 1
    finally:
        device.stop()
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from telemetry where device_id = $1 and v_num = 87",
                                   lamp.id) == 2


def _bound(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


async def test_bootstrap_gives_a_new_key_that_registers_and_retires_the_old_one(db, listener, city):
    lamp, factory = await keyed(db, city, "lamp-boot", purpose="bootstrap")
    old = PskCredentials(b"lamp-boot-old", os.urandom(16))
    await SecurityService(db, TEST_SECURITY).set_credential(
        city.principal, lamp.id, SetPsk(identity=old.identity.decode(), key_hex=old.key.hex()))

    booting = await connected(listener, "lamp-boot", factory)
    written = await bootstrapped(booting)
    assert booting.deleted == ["/0", "/1"]
    security, server = written["/0/1"], written["/1/0"]
    assert security[0].decode() == f"coaps://127.0.0.1:{listener.coaps_port}"
    assert security[1] == b"\x00" and int.from_bytes(security[2], "big") == PSK_MODE
    assert int.from_bytes(security[10], "big") == SHORT_SERVER_ID == int.from_bytes(server[0], "big")
    assert server[7] == b"U"
    new = PskCredentials(security[3], security[5])

    # Until the device registers with the new key, the old one still works (a lost Finish).
    before = await connected(listener, "lamp-boot", old)
    assert (await before.register_at(listener.coaps_port)).code == CREATED
    old_session = ("::ffff:127.0.0.1", before.transport.get_extra_info("sockname")[1])
    assert listener.coaps.server.identity_of(old_session) is not None
    after = await connected(listener, "lamp-boot", new)
    try:
        assert (await after.register_at(listener.coaps_port)).code == CREATED
        assert listener.coaps.server.identity_of(old_session) is None  # the old key's session ended
        assert (await after.send(PACK)).code == CHANGED
    finally:
        after.stop()
        before.stop()
    await heard(listener, old.identity, present=False)
    await handshake_refused(listener, "lamp-boot", old)
    async with db.system_tx() as conn:
        states = dict(await conn.fetch(
            "select identity, state from device_credentials where device_id = $1 and purpose = 'operational'",
            lamp.id))
    assert states == {old.identity.decode(): "retired", new.identity.decode(): "active"}


async def test_a_nosec_device_of_an_open_city_bootstraps_in_plain_and_then_registers_over_coaps(db, listener):
    city = await make_city(db, "opencity")
    await light(db, city, "lamp-nosec")
    device = DtlsDevice("lamp-nosec", (TLV,))
    await device.start()  # a plain socket: rawdevice's
    device.server = ("127.0.0.1", listener.port)
    security = (await bootstrapped(device))["/0/1"]
    keyed_now = await connected(listener, "lamp-nosec", PskCredentials(security[3], security[5]))
    try:
        assert (await keyed_now.register_at(listener.coaps_port)).code == CREATED
    finally:
        keyed_now.stop()
    # From now on it holds a key, so plain CoAP is closed to it.
    assert b"coaps://" in (await refused_in_plain(listener, "lamp-nosec")).payload


async def refused_in_plain(listener, endpoint: str) -> Datagram:
    device = DtlsDevice(endpoint, (TLV,), values={"/3/0/0": "Acme"})
    await device.start()
    try:
        answer = await device.register(listener.port)
    finally:
        device.stop()
    assert answer.code == FORBIDDEN
    return answer


async def test_a_device_with_a_bootstrap_key_cannot_bootstrap_in_plain(db, listener, coap_client):
    city = await make_city(db, "opencity")  # takes NoSec devices, but this one has a factory key
    await keyed(db, city, "lamp-factory", purpose="bootstrap")
    request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{listener.port}/bs?ep=lamp-factory")
    answer = await coap_client.request(request).response
    assert answer.code == Code.FORBIDDEN and b"coaps://" in answer.payload


async def test_a_city_that_takes_no_psk_bootstraps_its_devices_with_a_key_pair(db, listener):
    """The bootstrap issues what the city takes: a key pair, the device's private key written to
    it once, Fleet's public key beside it; the device then registers with raw public keys."""
    city = await make_city(db, "rpkcity", allow_nosec_devices=False)
    async with db.system_tx() as conn:
        await conn.execute("update tenants set security_modes = '{rpk}' where id = $1", city.tenant_id)
    lamp = await light(db, city, "lamp-rpk-boot")
    factory = ec.generate_private_key(ec.SECP256R1())
    pem = factory.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    await SecurityService(db, TEST_SECURITY).set_credential(city.principal, lamp.id,
                                                            SetRpk(public_key=pem, purpose="bootstrap"))
    await until(lambda: listener.directory.rpk(public_key_xy(factory)) is not None)
    booting = DtlsDevice("lamp-rpk-boot", (TLV,), values={"/3/0/0": "Acme"})
    await booting.start_dtls(listener.coaps_port, RpkCredentials(factory, server_key(TEST_SECURITY).public_key()))
    security = (await bootstrapped(booting))["/0/1"]
    assert int.from_bytes(security[2], "big") == RPK_MODE
    private_key = serialization.load_der_private_key(security[5], password=None)
    assert security[3] == private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    fleet_key = serialization.load_der_public_key(security[4])
    await until(lambda: listener.directory.rpk(public_key_xy(private_key)) is not None)
    device = DtlsDevice("lamp-rpk-boot", (TLV,), values={"/3/0/0": "Acme"})
    await device.start_dtls(listener.coaps_port, RpkCredentials(private_key, fleet_key))
    try:
        assert (await device.register_at(listener.coaps_port)).code == CREATED
    finally:
        device.stop()
    async with db.system_tx() as conn:
        stored = await conn.fetch("select mode, state from device_credentials where device_id = $1 and "
                                  "purpose = 'operational'", lamp.id)
    assert [tuple(r) for r in stored] == [("rpk", "active")]


async def test_the_coaps_listener_opens_with_every_key_loaded(db, city):
    lamp, credentials = await keyed(db, city, "lamp-loaded")
    async with open_listener(db, "::", 0, coaps_port=0, security=TEST_SECURITY) as running:
        assert running.directory.loaded.is_set()
        assert running.directory.psk(credentials.identity) is not None  # no lookup at the first handshake


async def test_a_slow_key_load_is_waited_for_a_bounded_time_and_said(db, monkeypatch):
    monkeypatch.setattr(listener_module, "FOLLOW_START_S", 0)  # the database "slower" than that
    with capture_logs() as logs:
        async with open_listener(db, "::", 0, coaps_port=0, security=TEST_SECURITY) as running:
            assert running.coaps_port
    assert any(line["event"].startswith("device keys not loaded yet") and line["log_level"] == "warning"
               for line in logs)


async def test_a_key_of_a_mode_the_city_dropped_is_refused_and_the_log_says_why(db, listener):
    city = await make_city(db, "droppedpsk", allow_nosec_devices=False)
    _, credentials = await keyed(db, city, "lamp-dropped")
    await heard(listener, credentials.identity)
    async with db.system_tx() as conn:
        await conn.execute("update tenants set security_modes = '{rpk}' where id = $1", city.tenant_id)
    await heard(listener, credentials.identity, present=False)
    with capture_logs() as logs:
        await handshake_refused(listener, "lamp-dropped", credentials)
    assert [line["reason"] for line in logs if line["event"] == "DTLS handshake failed"] == [
        "unknown PSK identity 'lamp-dropped-operational': the city of 'lamp-dropped' does not take psk devices"]
async def test_rotating_or_revoking_a_key_ends_the_coaps_registration_made_with_it(db, listener, city):
    lamp, old = await keyed(db, city, "lamp-rotated")
    service = SecurityService(db, TEST_SECURITY)
    device = await connected(listener, "lamp-rotated", old)
    try:
        assert (await device.register_at(listener.coaps_port)).code == CREATED
        await until(lambda: listener.server.sessions.of_device(lamp.id) is not None)
        new = PskCredentials(b"lamp-rotated-new", os.urandom(16))
        await service.set_credential(city.principal, lamp.id,
                                     SetPsk(identity=new.identity.decode(), key_hex=new.key.hex()))
        assert await registration(db, "lamp-rotated") is None  # ended with the rotation's commit
        await until(lambda: listener.server.sessions.of_device(lamp.id) is None)  # every listener heard
    finally:
        device.stop()
    rotated = await connected(listener, "lamp-rotated", new)
    try:
        assert (await rotated.register_at(listener.coaps_port)).code == CREATED
        await service.revoke(city.principal, lamp.id, "operational")
        assert await registration(db, "lamp-rotated") is None
        await until(lambda: listener.server.sessions.of_device(lamp.id) is None)
    finally:
        rotated.stop()
    async with db.system_tx() as conn:
        reasons = [r["payload"].get("reason") for r in await conn.fetch(
            "select payload from events where subject_id = $1 and kind = 'device.status_changed' order by id",
            str(lamp.id))]
    assert reasons.count("credential_changed") == 2


async def test_a_bootstrap_key_of_x_cannot_bootstrap_y(db, listener, city):
    _, factory = await keyed(db, city, "lamp-bs-x", purpose="bootstrap")
    await light(db, city, "lamp-bs-y")
    device = await connected(listener, "lamp-bs-y", factory)  # X's factory key, Y's name
    try:
        answer = await device.request_bootstrap()
    finally:
        device.stop()
    assert answer.code == FORBIDDEN
    assert answer.payload.decode() == ("the DTLS credential does not belong to endpoint 'lamp-bs-y': "
                                       "a device bootstraps only as itself")
