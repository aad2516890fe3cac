"""Release keys and signed firmware images over real HTTP and a real database: registering and
revoking keys, uploads that verify or not, the size limit, reading and downloading, deleting,
roles, and the check again before a campaign (verify_stored)."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.access.models import Role
from fleet.errors import ValidationFailed
from fleet.firmware.models import CHUNK_SIZE
from fleet.firmware.service import FirmwareService, verify_stored
from tests.conftest import serve_api

KEYS = "/api/v1/firmware/keys"
IMAGES = "/api/v1/firmware/images"


def public_pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def problem_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


def fields_of(problem: dict) -> dict[str, str]:
    return {e["field"]: e["message"] for e in problem.get("errors") or []}


async def register(city, key: Ed25519PrivateKey, name: str = "release 2026") -> dict:
    response = await city.client.post(KEYS, json={"name": name, "public_key": public_pem(key)})
    assert response.status_code == 201, response.text
    return response.json()


async def upload(client: httpx.AsyncClient, content: bytes, key: Ed25519PrivateKey | None, *,
                 signature: str | None = None, headers: dict | None = None, **fields) -> httpx.Response:
    if signature is None:
        signature = base64.b64encode(key.sign(content)).decode()
    form = {"version": "2.1.0", "models": "SL-100, SL-200", "notes": "fixes dimming", "signature": signature,
            **fields}
    return await client.post(IMAGES, files={"file": ("lamp-2.1.0.bin", content, "application/octet-stream")},
                             data=form, headers=headers)


async def test_a_city_registers_lists_and_revokes_release_keys(seoul, busan):
    key = Ed25519PrivateKey.generate()
    created = await register(seoul, key)
    assert created["name"] == "release 2026" and created["revoked_at"] is None
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert created["fingerprint"] == hashlib.sha256(raw).hexdigest()

    # The same key live twice in a city is a conflict; another city may trust it too.
    duplicate = await seoul.client.post(KEYS, json={"name": "again", "public_key": public_pem(key)})
    assert "already" in problem_of(duplicate, 409)["detail"]
    await register(busan, key)

    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    for pem in (rsa_pem, "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n", "not a key"):
        refused = await seoul.client.post(KEYS, json={"name": "bad", "public_key": pem})
        assert "public_key" in fields_of(problem_of(refused, 422))
    assert "Ed25519" in fields_of(problem_of(await seoul.client.post(
        KEYS, json={"name": "rsa", "public_key": rsa_pem}), 422))["public_key"]

    listed = (await seoul.client.get(KEYS)).json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert (await seoul.client.delete(f"{KEYS}/{created['id']}")).status_code == 204
    assert (await seoul.client.delete(f"{KEYS}/{created['id']}")).status_code == 204  # once is enough
    assert (await seoul.client.get(KEYS)).json()[0]["revoked_at"] is not None
    # Revoked, the key may be registered again (a new row, live).
    again = await register(seoul, key)
    assert again["id"] != created["id"]
    assert (await seoul.client.delete(f"{KEYS}/{uuid.uuid4()}")).status_code == 404

    audit = (await seoul.client.get("/api/v1/audit", params={"entity_type": "firmware_key"})).json()["items"]
    assert {"firmware_key.create", "firmware_key.revoke"} <= {e["action"] for e in audit}


async def test_an_image_signed_by_a_city_key_is_stored_listed_and_downloaded(seoul, db):
    key = Ed25519PrivateKey.generate()
    registered = await register(seoul, key)
    # Over two chunks, so the bytes come back from three rows.
    content = os.urandom(2 * CHUNK_SIZE + 1234)
    response = await upload(seoul.client, content, key)
    assert response.status_code == 201, response.text
    image = response.json()
    assert image["sha256"] == hashlib.sha256(content).hexdigest() and image["size"] == len(content)
    assert image["models"] == ["SL-100", "SL-200"] and image["manufacturers"] == []
    assert (image["version"], image["notes"], image["key_id"]) == ("2.1.0", "fixes dimming", registered["id"])
    assert image["filename"] == "lamp-2.1.0.bin" and image["campaigns"] == 0
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from firmware_image_chunks where image_id = $1",
                                   uuid.UUID(image["id"])) == 3

    assert (await seoul.client.get(f"{IMAGES}/{image['id']}")).json() == image
    downloaded = await seoul.client.get(f"{IMAGES}/{image['id']}/content")
    assert downloaded.status_code == 200 and downloaded.content == content
    assert downloaded.headers["etag"] == f'"{image["sha256"]}"'
    assert downloaded.headers["content-type"] == "application/octet-stream"
    assert 'filename="lamp-2.1.0.bin"' in downloaded.headers["content-disposition"]

    # Newest first, a page at a time.
    second = (await upload(seoul.client, b"second image", key, version="2.2.0", models="")).json()
    assert second["models"] == []
    first_page = (await seoul.client.get(IMAGES, params={"limit": 1})).json()
    assert [i["id"] for i in first_page["items"]] == [second["id"]] and first_page["next_cursor"]
    next_page = (await seoul.client.get(IMAGES, params={"limit": 1, "cursor": first_page["next_cursor"]})).json()
    assert [i["id"] for i in next_page["items"]] == [image["id"]] and next_page["next_cursor"] is None
    assert problem_of(await seoul.client.get(IMAGES, params={"cursor": "nope"}), 422)

    audit = (await seoul.client.get("/api/v1/audit", params={"entity_type": "firmware_image"})).json()["items"]
    assert [e["action"] for e in audit] == ["firmware_image.create", "firmware_image.create"]
    assert content.hex()[:64] not in str(audit)


async def test_an_image_no_live_key_of_the_city_verifies_is_refused(seoul, busan):
    key, stranger, theirs = (Ed25519PrivateKey.generate() for _ in range(3))
    registered = await register(seoul, key)
    await register(busan, theirs)
    content = b"firmware " * 1000
    not_verified = "signature does not verify with any release key of this city"

    tampered = base64.b64encode(key.sign(content + b"!")).decode()
    assert fields_of(problem_of(await upload(seoul.client, content, key, signature=tampered), 422)) == {
        "signature": not_verified}
    for other in (stranger, theirs):  # unregistered, or another city's
        assert fields_of(problem_of(await upload(seoul.client, content, other), 422)) == {"signature": not_verified}
    assert "base64" in fields_of(problem_of(await upload(seoul.client, content, key, signature="%%%"), 422))[
        "signature"]
    short = base64.b64encode(bytes(32)).decode()
    assert "64 bytes" in fields_of(problem_of(await upload(seoul.client, content, key, signature=short), 422))[
        "signature"]
    assert "file" in fields_of(problem_of(await upload(seoul.client, b"", key), 422))
    assert "version" in fields_of(problem_of(await upload(seoul.client, content, key, version="  "), 422))
    missing_version = await seoul.client.post(IMAGES, files={"file": ("a.bin", content)},
                                              data={"signature": base64.b64encode(key.sign(content)).decode()})
    assert missing_version.status_code == 400
    not_utf8 = (b'--b\r\nContent-Disposition: form-data; name="version"\r\n\r\n\xff\xfe\r\n'
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\nxx\r\n--b--\r\n')
    problem_of(await seoul.client.post(IMAGES, content=not_utf8,
                                       headers={"content-type": "multipart/form-data; boundary=b"}), 400)

    assert (await seoul.client.delete(f"{KEYS}/{registered['id']}")).status_code == 204
    assert fields_of(problem_of(await upload(seoul.client, content, key), 422)) == {"signature": not_verified}
    assert (await seoul.client.get(IMAGES)).json()["items"] == []


async def test_the_size_limit_is_the_configured_one_on_this_route_only(db, seoul):
    key = Ed25519PrivateKey.generate()
    await register(seoul, key)
    limit = 1000
    async with serve_api(db, firmware_service=FirmwareService(db, max_image_bytes=limit)) as url, \
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {seoul.key}"}) as client:
        assert (await upload(client, bytes(limit), key)).status_code == 201
        too_big = problem_of(await upload(client, bytes(limit + 1), key), 413)
        assert str(limit) in too_big["detail"]
        # Far over: refused by the body limit of the route before the form is read, same words.
        far = problem_of(await upload(client, bytes(limit + 256 * 1024), key), 413)
        assert far["detail"] == too_big["detail"]
        with_key = await upload(client, bytes(limit + 256 * 1024), key, headers={"Idempotency-Key": "big-1"})
        assert problem_of(with_key, 413)["detail"] == too_big["detail"]


async def test_an_upload_larger_than_the_apps_body_limit_passes_and_is_idempotent(db, seoul):
    """The app's body limit in tests is 4 MiB; an image of 5 MiB still passes on this route,
    with an Idempotency-Key too (the middleware reads the body against the route's limit)."""
    key = Ed25519PrivateKey.generate()
    await register(seoul, key)
    content = os.urandom(5 * 1024 * 1024)
    # The same boundary, so the retry is the same body byte for byte.
    headers = {"Idempotency-Key": "fw-5mib", "Content-Type": "multipart/form-data; boundary=fleet-test"}
    first = await upload(seoul.client, content, key, headers=headers)
    assert first.status_code == 201, first.text
    again = await upload(seoul.client, content, key, headers=headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len((await seoul.client.get(IMAGES)).json()["items"]) == 1
    # Elsewhere the app's limit holds.
    assert (await seoul.client.post("/api/v1/devices", content=bytes(5 * 1024 * 1024),
                                    headers={"content-type": "application/json"})).status_code == 413


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
async def test_only_admins_manage_keys_upload_and_download(seoul, city_factory, role):
    key = Ed25519PrivateKey.generate()
    await register(seoul, key)
    image = (await upload(seoul.client, b"image bytes", key)).json()
    issued = (await seoul.client.post("/api/v1/apikeys", json={"role": role.value, "name": role.value})).json()
    async with httpx.AsyncClient(base_url=str(seoul.client.base_url),
                                 headers={"Authorization": f"Bearer {issued['key']}"}) as other:
        assert (await other.get(KEYS)).status_code == 200
        assert (await other.get(IMAGES)).json()["items"][0]["id"] == image["id"]
        assert (await other.get(f"{IMAGES}/{image['id']}")).status_code == 200
        problem_of(await other.get(f"{IMAGES}/{image['id']}/content"), 403)
        problem_of(await upload(other, b"mine", key), 403)
        problem_of(await other.post(KEYS, json={"name": "x", "public_key": public_pem(key)}), 403)
        problem_of(await other.delete(f"{IMAGES}/{image['id']}"), 403)
        problem_of(await other.delete(f"{KEYS}/{image['key_id']}"), 403)


async def test_an_image_is_deleted_only_while_no_campaign_uses_it(seoul, db):
    key = Ed25519PrivateKey.generate()
    await register(seoul, key)
    unused = (await upload(seoul.client, b"unused", key)).json()
    assert (await seoul.client.delete(f"{IMAGES}/{unused['id']}")).status_code == 204
    assert (await seoul.client.get(f"{IMAGES}/{unused['id']}")).status_code == 404
    assert (await seoul.client.delete(f"{IMAGES}/{unused['id']}")).status_code == 404
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from firmware_image_chunks where image_id = $1",
                                   uuid.UUID(unused["id"])) == 0

    used = (await upload(seoul.client, b"used", key)).json()
    async with db.system_tx() as conn:
        for _ in range(2):
            await conn.execute("""insert into firmware_campaigns (tenant_id, image_id, target, settings)
                                  values ($1, $2, '{}', '{}')""", seoul.tenant_id, uuid.UUID(used["id"]))
    conflict = problem_of(await seoul.client.delete(f"{IMAGES}/{used['id']}"), 409)
    assert "2 campaigns" in conflict["detail"]
    assert (await seoul.client.get(f"{IMAGES}/{used['id']}")).json()["campaigns"] == 2


async def test_verify_stored_fails_after_tampering_or_revoking(seoul, db):
    key = Ed25519PrivateKey.generate()
    registered = await register(seoul, key)
    content = os.urandom(CHUNK_SIZE + 10)
    image = (await upload(seoul.client, content, key)).json()
    image_id = uuid.UUID(image["id"])
    async with db.tenant_tx(seoul.tenant_id) as conn:
        assert (await verify_stored(conn, seoul.tenant_id, image_id)).sha256 == image["sha256"]

    async with db.system_tx() as conn:
        await conn.execute("""update firmware_image_chunks set data = overlay(data placing '\\x00'::bytea from 5)
                              where image_id = $1 and seq = 1""", image_id)
    async with db.tenant_tx(seoul.tenant_id) as conn:
        with pytest.raises(ValidationFailed) as failed:
            await verify_stored(conn, seoul.tenant_id, image_id)
    assert "SHA-256" in failed.value.errors[0].message

    intact = (await upload(seoul.client, b"intact", key)).json()
    assert (await seoul.client.delete(f"{KEYS}/{registered['id']}")).status_code == 204
    async with db.tenant_tx(seoul.tenant_id) as conn:
        with pytest.raises(ValidationFailed) as failed:
            await verify_stored(conn, seoul.tenant_id, uuid.UUID(intact["id"]))
    assert "revoked" in failed.value.errors[0].message
