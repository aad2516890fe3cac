"""The credential directory against real PostgreSQL: loaded at start, current through NOTIFY (a new
key, a revoked one, a bootstrap key activated), a miss fetched for the retransmitted ClientHello,
and everything loaded again after its connection was lost."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.access.models import TenantUpdate
from fleet.access.service import TenantService
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.security import directory as directory_module
from fleet.security.crypto import CredentialCipher, KeyOwner, public_key_xy
from fleet.security.directory import CredentialDirectory
from fleet.security.models import KnownCredential, SetPsk, SetRpk
from fleet.security.service import SecurityService
from tests.conftest import TEST_SECURITY, make_city


async def until(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def city(db):
    return await make_city(db, "seoul")


async def device(db, city, endpoint: str):
    return await DeviceService(db).create_validated(city.principal, NewDevice(DeviceKind.STREETLIGHT, endpoint, 37.5, 126.9))


@contextlib.asynccontextmanager
async def running(directory: CredentialDirectory, coroutine=None):
    task = asyncio.create_task(coroutine or directory.run())
    try:
        yield directory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_directory_loads_and_follows_every_change(db, city):
    security = SecurityService(db, TEST_SECURITY)
    first, second = await device(db, city, "sl-1"), await device(db, city, "sl-2")
    await security.set_credential(city.principal, first.id, SetPsk(identity="sl-1", key_hex="11" * 16))
    removed: list[KnownCredential] = []
    directory = CredentialDirectory(db, TEST_SECURITY, on_removed=removed.extend)
    async with running(directory):
        async with asyncio.timeout(10):
            await directory.loaded.wait()
        key, known = directory.psk(b"sl-1")
        assert key == b"\x11" * 16
        assert (known.device_id, known.tenant_id, known.endpoint, known.purpose, known.mode, known.state) == (
            first.id, city.tenant_id, "sl-1", "operational", "psk", "active")

        # Another node's change arrives through NOTIFY.
        device_key = ec.generate_private_key(ec.SECP256R1())
        pem = device_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        await security.set_credential(city.principal, second.id, SetRpk(public_key=pem))
        xy = public_key_xy(device_key.public_key())
        await until(lambda: directory.rpk(xy) is not None)
        assert directory.rpk(xy).endpoint == "sl-2"

        # A rotated key replaces the old one; the old one's sessions are told to end.
        await security.set_credential(city.principal, first.id, SetPsk(identity="sl-1-v2", key_hex="22" * 16))
        await until(lambda: directory.psk(b"sl-1") is None and directory.psk(b"sl-1-v2") is not None)
        await until(lambda: [c.endpoint for c in removed] == ["sl-1"])
        assert removed[0].credential_id == known.credential_id

        await security.revoke(city.principal, second.id)
        await until(lambda: directory.rpk(xy) is None)
        assert len(directory) == 1


async def test_a_bootstrap_key_is_served_pending_then_active_and_retires_the_old_one(db, city):
    security = SecurityService(db, TEST_SECURITY)
    lamp = await device(db, city, "sl-3")
    await security.set_credential(city.principal, lamp.id, SetPsk(identity="factory-op", key_hex="33" * 16))
    removed: list[KnownCredential] = []
    directory = CredentialDirectory(db, TEST_SECURITY, on_removed=removed.extend)
    async with running(directory):
        async with asyncio.timeout(10):
            await directory.loaded.wait()
        issued = await security.issue_operational_psk(city.tenant_id, lamp.id)
        assert len(issued.key) == 16 and issued.credential.state == "pending"
        await until(lambda: directory.psk(issued.identity.encode()) is not None)
        assert directory.psk(issued.identity.encode()) == (issued.key, issued.credential)
        assert directory.psk(b"factory-op") is not None   # the old key works until the device uses the new one

        activation = await security.activate(issued.credential)
        assert activation.credential.state == "active" and len(activation.retired) == 1
        assert await security.activate(issued.credential) is None   # once only
        await until(lambda: directory.psk(b"factory-op") is None
                    and directory.psk(issued.identity.encode())[1].state == "active")
        assert [c.credential_id for c in removed] == activation.retired
    audit = [r["action"] async for r in _audit(db)]
    assert audit == ["device.security.set", "device.security.issue", "device.security.activate"]


async def _audit(db):
    async with db.system_tx() as conn:
        for row in await conn.fetch("select action from audit_log where action like 'device.security.%' order by id"):
            yield row


async def test_a_miss_is_fetched_so_the_retransmitted_hello_finds_it(db, city):
    security = SecurityService(db, TEST_SECURITY)
    lamp = await device(db, city, "sl-4")
    directory = CredentialDirectory(db, TEST_SECURITY, max_pending_lookups=2)
    # Only the worker, not the NOTIFY feed: what the directory learns here it learns by asking.
    async with running(directory, directory._work()):
        await security.set_credential(city.principal, lamp.id, SetPsk(identity="late", key_hex="44" * 16))
        assert directory.psk(b"late") is None       # the first ClientHello: unknown, a fetch starts
        await until(lambda: directory.psk(b"late") is not None)
        assert directory.psk(b"late")[0] == b"\x44" * 16
        assert directory.psk(b"\xff\xfe") is None   # not UTF-8: never stored, never asked about


async def test_after_a_lost_connection_everything_is_loaded_again(db, city):
    security = SecurityService(db, TEST_SECURITY)
    lamp = await device(db, city, "sl-5")
    await security.set_credential(city.principal, lamp.id, SetPsk(identity="before", key_hex="55" * 16))
    directory = CredentialDirectory(db, TEST_SECURITY, retry_s=0.05)
    async with running(directory):
        async with asyncio.timeout(10):
            await directory.loaded.wait()
        pid = directory.follower.backend_pid
        directory.loaded.clear()
        async with db.system_tx() as conn:
            await conn.execute("select pg_terminate_backend($1)", pid)
        await until(lambda: directory.follower.backend_pid not in (None, pid))
        async with asyncio.timeout(10):
            await directory.loaded.wait()
        assert directory.psk(b"before") is not None


async def test_a_mode_the_city_stops_allowing_and_a_decommissioned_device_stop_authenticating(db, city):
    security = SecurityService(db, TEST_SECURITY)
    lamp, bin_ = await device(db, city, "sl-6"), await device(db, city, "sl-7")
    device_key = ec.generate_private_key(ec.SECP256R1())
    pem = device_key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    await security.set_credential(city.principal, lamp.id, SetRpk(public_key=pem))
    await security.set_credential(city.principal, bin_.id, SetPsk(identity="sl-7", key_hex="77" * 16))
    xy = public_key_xy(device_key.public_key())
    directory = CredentialDirectory(db, TEST_SECURITY)
    async with running(directory):
        await until(lambda: directory.rpk(xy) is not None and directory.psk(b"sl-7") is not None)
        await TenantService(db).update(city.principal, TenantUpdate(security_modes=["psk"]))
        await until(lambda: directory.rpk(xy) is None)
        await TenantService(db).update(city.principal, TenantUpdate(security_modes=["psk", "rpk"]))
        await until(lambda: directory.rpk(xy) is not None)

        await DeviceService(db).decommission(city.principal, bin_.id)
        await until(lambda: directory.psk(b"sl-7") is None)
    assert await security.credentials(city.principal, bin_.id) == []


async def test_a_city_dropping_a_mode_removes_its_keys_in_one_batch(db, city):
    """Every key a change removes reaches each removal hook in one call (the listener's closes
    their DTLS sessions in one pass over the sessions), not one call, and one pass, per key."""
    security = SecurityService(db, TEST_SECURITY)
    for number in range(5):
        lamp = await device(db, city, f"sl-batch-{number}")
        await security.set_credential(city.principal, lamp.id,
                                      SetPsk(identity=f"sl-batch-{number}", key_hex=f"{number:02x}" * 16))
    calls: list[list[KnownCredential]] = []
    directory = CredentialDirectory(db, TEST_SECURITY, on_removed=calls.append)
    async with running(directory):
        async with asyncio.timeout(10):
            await directory.loaded.wait()
        assert len(directory) == 5
        await TenantService(db).update(city.principal, TenantUpdate(security_modes=["rpk"]))
        await until(lambda: len(directory) == 0)
        await until(lambda: calls)
    assert len(calls) == 1
    assert sorted(c.endpoint for c in calls[0]) == [f"sl-batch-{number}" for number in range(5)]


async def test_a_key_moved_to_another_device_or_city_does_not_decrypt(db, city):
    """The stored key is bound to its city, device, purpose and id: a row edited to belong to
    another device (or city) serves no key, and its sessions are told to end."""
    security = SecurityService(db, TEST_SECURITY)
    lamp, other = await device(db, city, "sl-moved"), await device(db, city, "sl-thief")
    await security.set_credential(city.principal, lamp.id, SetPsk(identity="sl-moved", key_hex="5a" * 16))
    busan = await make_city(db, "busan")
    stranger = await device(db, busan, "sl-stranger")
    removed: list[KnownCredential] = []
    directory = CredentialDirectory(db, TEST_SECURITY, on_removed=removed.extend)
    async with running(directory):
        await until(lambda: directory.psk(b"sl-moved") is not None)
        async with db.system_tx() as conn:
            row = await conn.fetchrow("select c.*, d.endpoint from device_credentials c join devices d "
                                      "on d.id = c.device_id where c.identity = 'sl-moved'")
            # A full reload holding the key under the same nonce must not hand it to a new owner.
            for moved in ({**row, "device_id": other.id}, {**row, "tenant_id": busan.tenant_id, "device_id": stranger.id},
                          {**row, "purpose": "bootstrap"}):
                assert await directory._entries_of([moved]) == {}
            await conn.execute("update device_credentials set device_id = $1 where id = $2", other.id, row["id"])
        await until(lambda: directory.psk(b"sl-moved") is None)
        await until(lambda: [c.credential_id for c in removed] == [row["id"]])


async def test_the_doctor_finds_device_keys_stored_under_another_key(db, city):
    from fleet.db.doctor import Status, check_credentials
    from fleet.settings import SecuritySettings

    async with db.system_tx() as conn:
        assert (await check_credentials(conn, TEST_SECURITY)).status is Status.OK
        assert (await check_credentials(conn, SecuritySettings())).status is Status.WARN
    lamp = await device(db, city, "sl-9")
    await SecurityService(db, TEST_SECURITY).set_credential(city.principal, lamp.id, SetPsk(identity="sl-9"))
    async with db.system_tx() as conn:
        assert (await check_credentials(conn, TEST_SECURITY)).status is Status.OK
        other = await check_credentials(conn, SecuritySettings(credentials_key=bytes(32)))
        assert other.status is Status.FAIL and "does not decrypt" in other.found
        assert (await check_credentials(conn, SecuritySettings())).status is Status.FAIL


async def test_a_node_with_another_credentials_key_serves_no_psk_and_says_so_in_one_line(db, city):
    from structlog.testing import capture_logs

    from fleet.settings import SecuritySettings

    security = SecurityService(db, TEST_SECURITY)
    for n in (1, 2):
        lamp = await device(db, city, f"wrong-{n}")
        await security.set_credential(city.principal, lamp.id, SetPsk(identity=f"wrong-{n}"))
    directory = CredentialDirectory(db, SecuritySettings(credentials_key=bytes(32)))
    with capture_logs() as logs:
        async with running(directory):
            async with asyncio.timeout(10):
                await directory.loaded.wait()
            assert directory.psk(b"wrong-1") is None and len(directory) == 0
    errors = [e for e in logs if e["log_level"] == "error"]
    # The load's one line counts both (the miss the lookup above started may add its own).
    assert errors and errors[0]["credentials"] == 2


async def test_a_full_reload_yields_to_the_loop_and_decrypts_only_what_changed(db, monkeypatch):
    cipher = CredentialCipher(TEST_SECURITY)
    rows = []
    for n in range(10):
        owner = KeyOwner(uuid.uuid4(), uuid.uuid4(), "operational", uuid.uuid4())
        ciphertext, nonce = cipher.seal(owner, bytes([n]) * 16)
        rows.append({"id": owner.credential_id, "device_id": owner.device_id, "tenant_id": owner.tenant_id, "endpoint": f"e{n}",
                     "purpose": "operational", "mode": "psk", "state": "active", "identity": f"id-{n}",
                     "key_ciphertext": ciphertext, "key_nonce": nonce, "public_key_xy": None})
    directory = CredentialDirectory(db, TEST_SECURITY)
    monkeypatch.setattr(directory_module, "RELOAD_SLICE", 3)
    ticks = 0

    async def count_ticks():
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    ticker = asyncio.create_task(count_ticks())
    await asyncio.sleep(0)
    directory._replace_all(await directory._entries_of(rows))
    assert ticks >= 3 and directory.psk(b"id-4")[0] == bytes([4]) * 16
    opened = []
    monkeypatch.setattr(directory.cipher, "open", lambda *args: opened.append(args) or cipher.open(*args))
    rows[4]["key_ciphertext"], rows[4]["key_nonce"] = cipher.seal(KeyOwner.of(rows[4]), b"\x44" * 16)  # rotated in place
    directory._replace_all(await directory._entries_of(rows))
    ticker.cancel()
    assert len(opened) == 1 and directory.psk(b"id-4")[0] == b"\x44" * 16 and directory.psk(b"id-5")[0] == bytes([5]) * 16
