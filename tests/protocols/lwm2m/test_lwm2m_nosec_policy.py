"""Registrations under the city's security policy (and the device's key), on real UDP, HTTP and PostgreSQL."""

from __future__ import annotations

import asyncio

import cbor2
import httpx
import pytest
from aiocoap import Code, Message

from fleet.registrations.models import (CREDENTIAL_CHANGED, SECURITY_POLICY_CHANGED, AuthenticatedDevice,
                                        RegisterRequest)
from fleet.registrations.service import RegistrationRefused, RegistrationService
from fleet.security.models import KnownCredential, SetPsk
from fleet.security.service import SecurityService
from tests.conftest import TEST_SECURITY, make_city
from tests.protocols.test_lwm2m_server import provision, register, uri


async def test_a_city_requiring_dtls_refuses_a_nosec_register_with_4_03(db, listener, coap_client):
    city = await make_city(db, "dtlscity", allow_nosec_devices=False)
    await provision(db, city, "bin-nosec")
    response = await register(coap_client, listener, "bin-nosec")
    assert response.code == Code.FORBIDDEN
    assert b"requires DTLS" in response.payload
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from registrations where endpoint = 'bin-nosec'") == 0


async def test_a_device_holding_a_key_must_use_it(db, listener, coap_client):
    city = await make_city(db, "opencity")
    device = await provision(db, city, "bin-keyed")
    await SecurityService(db, TEST_SECURITY).set_credential(
        city.principal, device.id, SetPsk(identity="bin-keyed-id", key_hex="00" * 16))
    response = await register(coap_client, listener, "bin-keyed")
    assert response.code == Code.FORBIDDEN
    assert b"coaps://" in response.payload


async def test_a_plain_update_or_deregister_cannot_touch_a_coaps_registration(db, listener, coap_client):
    city = await make_city(db, "mixedcity")
    device = await provision(db, city, "bin-secure")
    async with db.system_tx() as conn:
        await conn.execute(
            """insert into registrations (id, device_id, tenant_id, endpoint, address, port, lifetime_s, binding,
                                          lwm2m_version, object_links, node, expires_at, secure)
               values ('sec1', $1, $2, 'bin-secure', '127.0.0.1', 40000, 300, 'U', '1.1', '', 'n',
                       now() + interval '5 minutes', true)""", device.id, city.tenant_id)
    for code in (Code.POST, Code.DELETE):
        response = await coap_client.request(Message(code=code, uri=uri(listener, "/rd/sec1"))).response
        assert response.code == Code.FORBIDDEN, (code, response.payload)
    async with db.system_tx() as conn:
        assert await conn.fetchval("select port from registrations where id = 'sec1'") == 40000


async def _send(coap_client, listener) -> Message:
    pack = cbor2.dumps([{-2: "/3435/0/", 0: "2", 2: 41.5}])
    return await coap_client.request(Message(code=Code.POST, uri=uri(listener, "/dp"), payload=pack,
                                             content_format=112)).response


async def _registered_in_plain(db, listener, coap_client, city, endpoint: str):
    device = await provision(db, city, endpoint)
    response = await register(coap_client, listener, endpoint)
    assert response.code == Code.CREATED, response.payload
    assert (await _send(coap_client, listener)).code == Code.CHANGED
    return device, response.opt.location_path[1]


async def _ended(db, listener, coap_client, device, registration_id: str, reason: str) -> None:
    """The plain registration ended at once: every listener heard it, the next Send is not the
    device's, its Update finds nothing, and the device went offline saying why."""
    async with asyncio.timeout(10):
        while listener.server.sessions.of_device(device.id) is not None:
            await asyncio.sleep(0.02)
    assert (await _send(coap_client, listener)).code == Code.FORBIDDEN
    update = Message(code=Code.POST, uri=uri(listener, f"/rd/{registration_id}"))
    assert (await coap_client.request(update).response).code == Code.NOT_FOUND
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from registrations where device_id = $1", device.id) == 0
        assert await conn.fetchval("select status from devices where id = $1", device.id) == "offline"
        events = await conn.fetch("select payload from events where subject_id = $1 and kind = 'device.status_changed'",
                                  str(device.id))
    assert [e["payload"]["reason"] for e in events if "reason" in e["payload"]] == [reason]


async def test_turning_nosec_off_ends_the_plain_registrations_at_once(db, listener, coap_client, api_url):
    city = await make_city(db, "closingcity")
    device, registration_id = await _registered_in_plain(db, listener, coap_client, city, "bin-closing")
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {city.key}"}) as client:
        answer = await client.patch("/api/v1/tenant", json={"allow_nosec_devices": False})
    assert answer.status_code == 200, answer.text
    await _ended(db, listener, coap_client, device, registration_id, SECURITY_POLICY_CHANGED)
    assert b"requires DTLS" in (await register(coap_client, listener, "bin-closing")).payload


async def test_a_key_given_by_put_ends_the_devices_plain_registration(db, listener, coap_client, api_url):
    city = await make_city(db, "keyingcity")
    device, registration_id = await _registered_in_plain(db, listener, coap_client, city, "bin-keyed-later")
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {city.key}"}) as client:
        answer = await client.put(f"/api/v1/devices/{device.id}/security",
                                  json={"mode": "psk", "identity": "bin-keyed-later"})
    assert answer.status_code == 200, answer.text
    await _ended(db, listener, coap_client, device, registration_id, CREDENTIAL_CHANGED)
    assert b"coaps://" in (await register(coap_client, listener, "bin-keyed-later")).payload


async def test_a_plain_update_checks_the_citys_policy_again(db, listener, coap_client):
    """A plain registration the policy change did not end (a Register racing it) ends at its
    next Update, with 4.03 saying why."""
    city = await make_city(db, "racecity")
    device, registration_id = await _registered_in_plain(db, listener, coap_client, city, "bin-racing")
    async with db.system_tx() as conn:  # behind the service's back: nothing ended
        await conn.execute("update tenants set allow_nosec_devices = false where id = $1", city.tenant_id)
    update = Message(code=Code.POST, uri=uri(listener, f"/rd/{registration_id}"))
    response = await coap_client.request(update).response
    assert response.code == Code.FORBIDDEN
    assert b"requires DTLS" in response.payload
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from registrations where device_id = $1", device.id) == 0


async def test_a_dtls_session_made_with_a_key_retired_since_does_not_register(db):
    """A Register racing a rotation (its node has not yet closed the old key's session) is refused."""
    city = await make_city(db, "rotatecity")
    device = await provision(db, city, "bin-rotating")
    security = SecurityService(db, TEST_SECURITY)
    old = (await security.set_credential(city.principal, device.id,
                                         SetPsk(identity="bin-rotating-1", key_hex="11" * 16))).credential
    await security.set_credential(city.principal, device.id, SetPsk(identity="bin-rotating-2", key_hex="22" * 16))
    session = AuthenticatedDevice(device.id, "operational", old.id, "psk", KnownCredential(
        old.id, device.id, city.tenant_id, "bin-rotating", "operational", "psk", "active"))
    request = RegisterRequest("bin-rotating", "127.0.0.1", 40001, 300, "U", "1.1", "</3/0>", secure=True,
                              authenticated=session)
    with pytest.raises(RegistrationRefused, match="replaced or revoked"):
        await RegistrationService(db, "test").register(request)
