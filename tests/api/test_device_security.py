"""Device credentials and the city's security policy over real HTTP and PostgreSQL: a key shown once
and stored encrypted, problems for every bad input, identities unique across cities without saying
where, revocation, the audit, the CSV's security columns, and the wall around the table."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.access.models import Role
from fleet.firmware.delivery import coaps_server_uri
from fleet.security.crypto import CredentialCipher, KeyOwner, server_key
from fleet.settings import SecuritySettings
from tests.conftest import TEST_SECURITY, make_city, serve_api

DEVICES = "/api/v1/devices"


def p256_pem(curve: ec.EllipticCurve | None = None) -> str:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


async def new_device(city, endpoint: str) -> str:
    response = await city.client.post(DEVICES, json={"kind": "streetlight", "endpoint": endpoint,
                                                     "location": {"lat": 37.56, "lon": 126.97}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


async def test_a_generated_key_is_shown_once_stored_encrypted_and_rotated(seoul, db):
    device_id = await new_device(seoul, "sl-1")
    put = await seoul.client.put(f"{DEVICES}/{device_id}/security", json={"mode": "psk", "identity": "sl-1-psk"})
    assert put.headers["cache-control"] == "no-store"  # the key is in this answer: no cache keeps it
    assert put.status_code == 200, put.text
    first = put.json()
    key = bytes.fromhex(first["key_hex"])
    assert len(key) == 16 and first["mode"] == "psk" and first["state"] == "active" and first["version"] == 1
    shown = await seoul.client.get(f"{DEVICES}/{device_id}/security")
    assert shown.status_code == 200 and first["key_hex"] not in shown.text and "key_hex" not in shown.json()
    assert shown.json()["mode"] == "psk" and [c["identity"] for c in shown.json()["credentials"]] == ["sl-1-psk"]
    async with db.system_tx() as conn:
        row = await conn.fetchrow("select * from device_credentials")
    assert key not in row["key_ciphertext"]
    assert CredentialCipher(TEST_SECURITY).open(KeyOwner.of(row), row["key_ciphertext"], row["key_nonce"]) == key

    # A key the caller gives is not echoed; the earlier credential is retired.
    again = await seoul.client.put(f"{DEVICES}/{device_id}/security",
                                   json={"mode": "psk", "identity": "sl-1-psk", "key_hex": "ab" * 16})
    assert again.status_code == 200 and "key_hex" not in again.json() and again.json()["version"] == 2
    assert [c["version"] for c in (await seoul.client.get(f"{DEVICES}/{device_id}/security")).json()["credentials"]] == [2]
    audit = (await seoul.client.get("/api/v1/audit", params={"action": "device.security.set"})).json()["items"]
    assert len(audit) == 2 and all(first["key_hex"] not in str(e) and "ab" * 16 not in str(e) for e in audit)


async def test_a_raw_public_key_and_a_bootstrap_psk(seoul):
    device_id = await new_device(seoul, "sl-2")
    pem = p256_pem()
    rpk = await seoul.client.put(f"{DEVICES}/{device_id}/security", json={"mode": "rpk", "public_key": pem})
    assert rpk.status_code == 200, rpk.text
    assert rpk.json()["public_key"].strip() == pem.strip() and rpk.json()["identity"] is None
    # The fingerprint an installer compares with the device's: sha256 of the SubjectPublicKeyInfo DER.
    der = serialization.load_pem_public_key(pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert rpk.json()["fingerprint"] == hashlib.sha256(der).hexdigest()
    bootstrap = await seoul.client.put(f"{DEVICES}/{device_id}/security", json={
        "mode": "psk", "purpose": "bootstrap", "identity": "factory-sl-2", "key_hex": "01" * 16})
    assert bootstrap.status_code == 200, bootstrap.text
    shown = (await seoul.client.get(f"{DEVICES}/{device_id}/security")).json()
    assert shown["mode"] == "rpk"
    assert sorted((c["purpose"], c["mode"]) for c in shown["credentials"]) == [("bootstrap", "psk"), ("operational", "rpk")]


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"mode": "psk", "identity": "x" * 33}, 422, "identity"),
    ({"mode": "psk", "identity": "ok", "key_hex": "00" * 32}, 422, "key_hex"),  # more than tinydtls takes
    ({"mode": "psk", "identity": ""}, 422, "identity"),
    ({"mode": "psk", "identity": "ok", "key_hex": "00" * 15}, 422, "key_hex"),
    ({"mode": "psk", "identity": "ok", "key_hex": "not hex at all, sorry!!!!!!!!!!!!"}, 422, "key_hex"),
    ({"mode": "rpk", "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}, 422, "public_key"),
    ({"mode": "x509", "certificate": "..."}, 400, None),
    ({"mode": "psk"}, 400, None),
    ({"mode": "psk", "identity": "ok", "colour": "red"}, 400, None),
])
async def test_bad_credentials_get_a_problem_naming_the_field(seoul, body, status, field):
    device_id = await new_device(seoul, "sl-3")
    answer = problem(await seoul.client.put(f"{DEVICES}/{device_id}/security", json=body), status)
    if field:
        assert [e["field"] for e in answer["errors"]] == [field]


async def test_a_p384_key_is_refused_and_so_is_a_device_of_no_city_or_a_viewer(seoul, city_factory):
    device_id = await new_device(seoul, "sl-4")
    answer = problem(await seoul.client.put(f"{DEVICES}/{device_id}/security",
                                            json={"mode": "rpk", "public_key": p256_pem(ec.SECP384R1())}), 422)
    assert "secp384r1" in answer["errors"][0]["message"]
    problem(await seoul.client.put(f"{DEVICES}/{uuid.uuid4()}/security", json={"mode": "psk", "identity": "a"}), 404)
    viewer = await city_factory("seoul-viewers", Role.VIEWER)
    problem(await viewer.client.put(f"{DEVICES}/{device_id}/security", json={"mode": "psk", "identity": "a"}), 403)


async def test_an_identity_or_key_another_city_holds_is_a_conflict_that_names_no_city(seoul, busan):
    seoul_device, busan_device = await new_device(seoul, "sl-5"), await new_device(busan, "bs-5")
    pem = p256_pem()
    assert (await seoul.client.put(f"{DEVICES}/{seoul_device}/security",
                                   json={"mode": "psk", "identity": "shared"})).status_code == 200
    taken = problem(await busan.client.put(f"{DEVICES}/{busan_device}/security",
                                           json={"mode": "psk", "identity": "shared"}), 409)
    assert "seoul" not in str(taken).lower() and taken["errors"][0]["field"] == "identity"
    assert (await seoul.client.put(f"{DEVICES}/{seoul_device}/security",
                                   json={"mode": "rpk", "public_key": pem})).status_code == 200
    taken = problem(await busan.client.put(f"{DEVICES}/{busan_device}/security",
                                           json={"mode": "rpk", "public_key": pem}), 409)
    assert taken["errors"][0]["field"] == "public_key"
    # Retired (seoul's PSK went when it switched to RPK): the identity is free again.
    assert (await busan.client.put(f"{DEVICES}/{busan_device}/security",
                                   json={"mode": "psk", "identity": "shared"})).status_code == 200


async def test_revoking_leaves_the_device_without_credentials_and_is_audited(seoul):
    device_id = await new_device(seoul, "sl-6")
    await seoul.client.put(f"{DEVICES}/{device_id}/security", json={"mode": "psk", "identity": "sl-6"})
    await seoul.client.put(f"{DEVICES}/{device_id}/security",
                           json={"mode": "psk", "purpose": "bootstrap", "identity": "bs-6", "key_hex": "02" * 16})
    only_bootstrap = await seoul.client.delete(f"{DEVICES}/{device_id}/security", params={"purpose": "bootstrap"})
    assert only_bootstrap.status_code == 200 and [c["purpose"] for c in only_bootstrap.json()["credentials"]] == [
        "operational"]
    revoked = await seoul.client.delete(f"{DEVICES}/{device_id}/security")
    assert revoked.json() == {"device_id": device_id, "mode": "nosec", "credentials": []}
    audit = (await seoul.client.get("/api/v1/audit", params={"action": "device.security.revoke"})).json()["items"]
    assert len(audit) == 2


async def test_the_city_policy_is_read_and_changed_and_limits_the_modes(seoul):
    tenant = (await seoul.client.get("/api/v1/tenant")).json()
    assert tenant["allow_nosec_devices"] is True and tenant["security_modes"] == ["psk", "rpk"]  # a test city
    changed = await seoul.client.patch("/api/v1/tenant", json={"allow_nosec_devices": False,
                                                                 "security_modes": ["psk", "psk"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["allow_nosec_devices"] is False and changed.json()["security_modes"] == ["psk"]
    device_id = await new_device(seoul, "sl-7")
    refused = problem(await seoul.client.put(f"{DEVICES}/{device_id}/security",
                                             json={"mode": "rpk", "public_key": p256_pem()}), 422)
    assert refused["errors"][0]["field"] == "mode"
    problem(await seoul.client.patch("/api/v1/tenant", json={"security_modes": ["x509"]}), 400)
    # No mode and no NoSec: no device could connect.
    lockout = problem(await seoul.client.patch("/api/v1/tenant", json={"security_modes": []}), 422)
    assert [e["field"] for e in lockout["errors"]] == ["security_modes"]
    lockout = problem(await seoul.client.patch("/api/v1/tenant", json={"allow_nosec_devices": False,
                                                                       "security_modes": []}), 422)
    assert [e["field"] for e in lockout["errors"]] == ["security_modes"]
    assert (await seoul.client.get("/api/v1/tenant")).json()["security_modes"] == ["psk"]
    audit = (await seoul.client.get("/api/v1/audit", params={"action": "tenant.update"})).json()["items"]
    assert audit[0]["after"]["allow_nosec_devices"] is False


async def test_a_new_city_refuses_nosec_unless_told(db):
    strict = await make_city(db, "strict", allow_nosec_devices=False)
    async with db.system_tx() as conn:
        assert await conn.fetchval("select allow_nosec_devices from tenants where id = $1", strict.tenant_id) is False


async def test_without_a_credentials_key_keys_are_refused_as_the_servers_configuration_error(db):
    city = await make_city(db, "keyless")
    async with serve_api(db, security=SecuritySettings()) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {city.key}"}) as client:
            city.client = client
            device_id = await new_device(city, "sl-8")
            answer = problem(await client.put(f"{DEVICES}/{device_id}/security",
                                              json={"mode": "psk", "identity": "sl-8"}), 500)
            assert "FLEET_CREDENTIALS_KEY" in answer["detail"] and "configuration error" in answer["detail"]
            refused = await client.put(f"{DEVICES}/{device_id}/security", json={"mode": "psk", "identity": "sl-8"})
            assert "retry-after" not in refused.headers  # retrying cannot help
            # A public key needs no secret.
            assert (await client.put(f"{DEVICES}/{device_id}/security",
                                     json={"mode": "rpk", "public_key": p256_pem()})).status_code == 200


async def test_csv_import_stores_keys_and_export_never_writes_them(seoul, busan, db):
    pem = p256_pem()
    rows = [["kind", "endpoint", "lat", "lon", "security_mode", "psk_identity", "psk_key_hex", "public_key",
             "bootstrap_psk_identity", "bootstrap_psk_key_hex"],
            ["streetlight", "imp-1", "37.5", "126.9", "psk", "imp-1-id", "11" * 16, "", "imp-1-bs", "22" * 16],
            ["streetlight", "imp-2", "37.5", "126.9", "rpk", "", "", pem, "", ""],
            ["streetlight", "imp-3", "37.5", "126.9", "", "", "", "", "", ""]]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    imported = await seoul.client.post(f"{DEVICES}/import", content=buffer.getvalue(),
                                       headers={"content-type": "text/csv"})
    assert imported.status_code == 201, imported.text
    async with db.system_tx() as conn:
        stored = await conn.fetch("select * from device_credentials "
                                  "order by identity nulls last")
    assert [(r["identity"], r["purpose"], r["mode"]) for r in stored] == [
        ("imp-1-bs", "bootstrap", "psk"), ("imp-1-id", "operational", "psk"), (None, "operational", "rpk")]
    assert CredentialCipher(TEST_SECURITY).open(KeyOwner.of(stored[1]), stored[1]["key_ciphertext"],
                                                stored[1]["key_nonce"]) == b"\x11" * 16

    exported = await seoul.client.get(f"{DEVICES}/export")
    assert exported.status_code == 200
    assert "11" * 16 not in exported.text and "22" * 16 not in exported.text
    by_endpoint = {r["endpoint"]: r for r in csv.DictReader(io.StringIO(exported.text))}
    assert (by_endpoint["imp-1"]["security_mode"], by_endpoint["imp-1"]["psk_identity"],
            by_endpoint["imp-1"]["bootstrap_psk_identity"], by_endpoint["imp-1"]["psk_key_hex"]) == (
        "psk", "imp-1-id", "imp-1-bs", "")
    # A cell starting with "-" is exported behind a quote (CSV injection), which import strips again.
    assert by_endpoint["imp-2"]["public_key"] == "'" + pem.strip()
    # What GET …/security says of a device without a key.
    assert by_endpoint["imp-3"]["security_mode"] == "nosec"
    imp_3 = next(d["id"] for d in (await seoul.client.get(DEVICES)).json()["items"] if d["endpoint"] == "imp-3")
    assert (await seoul.client.get(f"{DEVICES}/{imp_3}/security")).json()["mode"] == "nosec"

    # The same identity in another city: the whole import is refused, the row named, no city named.
    clash = io.StringIO()
    csv.writer(clash).writerows([rows[0], ["streetlight", "other-1", "37.5", "126.9", "psk", "imp-1-id",
                                           "33" * 16, "", "", ""]])
    refused = problem(await busan.client.post(f"{DEVICES}/import", content=clash.getvalue(),
                                              headers={"content-type": "text/csv"}), 409)
    assert refused["errors"] == [{"field": "psk_identity", "message": "already in use", "row": 2}]
    assert "seoul" not in str(refused).lower()
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from devices where endpoint = 'other-1'") == 0


async def test_the_wall_hides_and_guards_other_cities_credentials(seoul, busan, db):
    device_id = await new_device(seoul, "sl-9")
    await seoul.client.put(f"{DEVICES}/{device_id}/security", json={"mode": "psk", "identity": "sl-9"})
    async with db.tenant_tx(busan.tenant_id) as conn:
        assert await conn.fetchval("select count(*) from device_credentials") == 0
        assert await conn.execute("update device_credentials set state = 'retired', retired_at = now()") == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.tenant_tx(busan.tenant_id) as conn:
            await conn.execute(
                """insert into device_credentials (tenant_id, device_id, purpose, mode, state, version, public_key,
                                                   public_key_xy)
                   values ($1, $2, 'operational', 'rpk', 'active', 9, '\\x00', $3)""",
                seoul.tenant_id, uuid.UUID(device_id), bytes(64))
    async with db.tenant_tx(seoul.tenant_id) as conn:
        assert await conn.fetchval("select count(*) from device_credentials") == 1


async def test_the_openapi_document_shows_the_credential_routes_and_the_policy(seoul):
    schema = (await seoul.client.get("/schema/openapi.json")).json()
    operations = schema["paths"]["/api/v1/devices/{device_id}/security"]
    assert set(operations) == {"get", "put", "delete"}
    assert {"409", "422", "500"} <= set(operations["put"]["responses"])
    bodies = operations["put"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {b["$ref"].rsplit("/", 1)[1] for b in bodies} == {"SetPsk", "SetRpk"}
    assert {"allow_nosec_devices", "security_modes"} <= set(schema["components"]["schemas"]["TenantUpdate"]["properties"])


async def test_a_decommissioned_device_loses_its_credentials_and_takes_no_new_one(seoul):
    device_id = await new_device(seoul, "sl-10")
    await seoul.client.put(f"{DEVICES}/{device_id}/security", json={"mode": "psk", "identity": "sl-10"})
    assert (await seoul.client.delete(f"{DEVICES}/{device_id}")).status_code == 200
    assert (await seoul.client.get(f"{DEVICES}/{device_id}/security")).json()["credentials"] == []
    problem(await seoul.client.put(f"{DEVICES}/{device_id}/security", json={"mode": "psk", "identity": "sl-10"}), 409)


async def test_a_csv_row_saying_nosec_is_refused_where_the_city_requires_dtls(seoul, db):
    rows = [["kind", "endpoint", "lat", "lon", "security_mode", "psk_identity", "psk_key_hex"],
            ["streetlight", "ns-1", "37.5", "126.9", "", "", ""],  # no key yet: PUT …/security gives one
            ["streetlight", "ns-2", "37.5", "126.9", "nosec", "", ""],
            ["streetlight", "ns-3", "37.5", "126.9", "psk", "ns-3", "11" * 16]]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    assert (await seoul.client.patch("/api/v1/tenant", json={"allow_nosec_devices": False})).status_code == 200
    refused = problem(await seoul.client.post(f"{DEVICES}/import", content=buffer.getvalue(),
                                              headers={"content-type": "text/csv"}), 422)
    assert [(e["field"], e["row"]) for e in refused["errors"]] == [("security_mode", 3)]
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from devices where endpoint like 'ns-%'") == 0
    assert (await seoul.client.patch("/api/v1/tenant", json={"allow_nosec_devices": True})).status_code == 200
    imported = await seoul.client.post(f"{DEVICES}/import", content=buffer.getvalue(),
                                       headers={"content-type": "text/csv"})
    assert imported.status_code == 201, imported.text


async def test_an_rpk_device_is_told_fleets_key_and_uri(db):
    """What a device given its key by PUT needs to check Fleet and reach it: Fleet's DTLS public key
    (the server key every node derives) and the coaps URI."""
    city = await make_city(db, "rpkcity", Role.VIEWER)
    admin = await make_city(db, "rpkadmin")
    expected = server_key(TEST_SECURITY).public_key()
    expected_der = expected.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    async with serve_api(db, coaps_server_uri="coaps://fleet.example:5684") as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {city.key}"}) as viewer:
            shown = await viewer.get("/api/v1/security/server-key")  # any key may read it
            assert (await viewer.get("/api/v1/security/server-key", headers={"Authorization": ""})).status_code == 401
        assert shown.status_code == 200, shown.text
        key = shown.json()
        assert bytes.fromhex(key["public_key_der_hex"]) == expected_der
        assert serialization.load_pem_public_key(key["public_key"].encode()) == expected
        assert key["fingerprint"] == hashlib.sha256(expected_der).hexdigest()
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {admin.key}"}) as client:
            admin.client = client
            device_id = await new_device(admin, "sl-rpk")
            rpk = (await client.put(f"{DEVICES}/{device_id}/security",
                                    json={"mode": "rpk", "public_key": p256_pem()})).json()
            assert rpk["server_uri"] == "coaps://fleet.example:5684"
            assert rpk["server_public_key"] == key["public_key"]
            psk = (await client.put(f"{DEVICES}/{device_id}/security",
                                    json={"mode": "psk", "identity": "sl-rpk"})).json()
            assert psk["server_uri"] == "coaps://fleet.example:5684" and "server_public_key" not in psk
            assert "server_uri" not in (await client.get(f"{DEVICES}/{device_id}/security")).text
    async with serve_api(db, security=SecuritySettings()) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {city.key}"}) as viewer:
            missing = problem(await viewer.get("/api/v1/security/server-key"), 500)
    assert "FLEET_CREDENTIALS_KEY" in missing["detail"] and "retry-after" not in missing


def test_the_coaps_uri_is_derived_in_one_place():
    assert coaps_server_uri(None, "::", 5684) == "coaps://127.0.0.1:5684"
    assert coaps_server_uri(None, "2001:db8::1", 5684) == "coaps://[2001:db8::1]:5684"
    assert coaps_server_uri("coaps://fleet.example", "::", 5684) == "coaps://fleet.example"
    assert coaps_server_uri("coaps://fleet.example", "::", 0) is None
