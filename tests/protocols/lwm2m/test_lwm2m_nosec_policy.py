"""Plain-CoAP registrations under the city's security policy, on real UDP and PostgreSQL."""

from __future__ import annotations

from aiocoap import Code, Message

from fleet.security.models import SetPsk
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
