"""API keys over real HTTP: issue once, list without secrets, last use, revoke, and the role matrix."""

from __future__ import annotations

import uuid

import httpx
import pytest

KEYS = "/api/v1/apikeys"
LIGHT = {"kind": "streetlight", "location": {"lat": 37.5665, "lon": 126.978}}


def client_for(city, secret: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=str(city.client.base_url), headers={"Authorization": f"Bearer {secret}"})


async def issue(city, role: str, name: str = "") -> dict:
    response = await city.client.post(KEYS, json={"role": role, "name": name})
    assert response.status_code == 201, response.text
    return response.json()


async def test_issue_shows_the_secret_once(seoul, db):
    created = await issue(seoul, "operator", "night shift")
    secret, key = created["key"], created["api_key"]
    assert secret.startswith(f"fleet_{key['prefix']}_") and len(secret) > 40
    assert (key["role"], key["name"], key["revoked_at"], key["last_used_at"]) == (
        "operator", "night shift", None, None)
    listed = await seoul.client.get(KEYS)
    assert listed.status_code == 200
    assert secret not in listed.text and "hash" not in listed.text
    assert {k["id"] for k in listed.json()} == {str(seoul.principal.api_key_id), key["id"]}
    assert all(set(k) == {"id", "name", "role", "prefix", "created_at", "revoked_at", "last_used_at"}
               for k in listed.json())
    # Nor is the secret anywhere the server keeps: only its hash.
    async with db.system_tx() as conn:
        stored = await conn.fetchrow("select * from api_keys where id = $1", uuid.UUID(key["id"]))
        audit = await conn.fetch("select before::text, after::text from audit_log")
    assert secret not in str(dict(stored)) and secret.encode() != stored["key_hash"]
    assert all(secret not in str(tuple(entry)) for entry in audit)


async def test_last_used_at_appears_after_use(seoul):
    created = await issue(seoul, "viewer")
    async with client_for(seoul, created["key"]) as viewer:
        assert (await viewer.get("/api/v1/devices")).status_code == 200
    keys = {k["id"]: k for k in (await seoul.client.get(KEYS)).json()}
    used = keys[created["api_key"]["id"]]
    assert used["last_used_at"] is not None and used["last_used_at"] >= used["created_at"]
    assert keys[str(seoul.principal.api_key_id)]["last_used_at"] is not None


async def test_revoked_key_is_refused_at_once(seoul):
    created = await issue(seoul, "admin")
    async with client_for(seoul, created["key"]) as other_admin:
        assert (await other_admin.get("/api/v1/devices")).status_code == 200
        revoked = await seoul.client.delete(f"{KEYS}/{created['api_key']['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        refused = await other_admin.get("/api/v1/devices")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].lower().startswith("bearer")
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert (await other_admin.post(KEYS, json={"role": "admin"})).status_code == 401
    # Revoking again is harmless and keeps the first revocation time.
    again = await seoul.client.delete(f"{KEYS}/{created['api_key']['id']}")
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    listed = {k["id"]: k for k in (await seoul.client.get(KEYS)).json()}
    assert listed[created["api_key"]["id"]]["revoked_at"] == revoked.json()["revoked_at"]
    # The other keys still work.
    assert (await seoul.client.get("/api/v1/devices")).status_code == 200


async def test_keys_of_another_city_are_invisible(seoul, busan):
    theirs = await issue(busan, "admin")
    assert theirs["api_key"]["id"] not in {k["id"] for k in (await seoul.client.get(KEYS)).json()}
    response = await seoul.client.delete(f"{KEYS}/{theirs['api_key']['id']}")
    assert response.status_code == 404
    async with client_for(busan, theirs["key"]) as client:
        assert (await client.get("/api/v1/devices")).status_code == 200
    assert (await seoul.client.delete(f"{KEYS}/{uuid.uuid4()}")).status_code == 404


@pytest.mark.parametrize("body", [{"role": "root"}, {"role": "admin", "name": "x" * 201}, {},
                                  {"role": "admin", "secret": "mine"}, {"role": None}])
async def test_bad_key_requests(seoul, body):
    response = await seoul.client.post(KEYS, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["errors"]


async def role_clients(city) -> dict[str, httpx.AsyncClient]:
    clients = {"admin": city.client}
    for role in ("operator", "crew", "viewer"):
        clients[role] = client_for(city, (await issue(city, role))["key"])
    return clients


WRITE = ("admin", "operator")
EVERYONE = ("admin", "operator", "crew", "viewer")


async def test_role_matrix(seoul):
    clients = await role_clients(seoul)
    serial = iter(range(1000))
    device = (await seoul.client.post("/api/v1/devices", json={**LIGHT, "endpoint": "sl-base"})).json()
    group = (await seoul.client.post("/api/v1/groups", json={"name": "base"})).json()

    def body_for(name: str) -> dict:
        n = next(serial)
        return {"devices.create": {**LIGHT, "endpoint": f"sl-{n}"},
                "groups.create": {"name": f"group-{n}"},
                "apikeys.create": {"role": "viewer"}}.get(name)

    checks = [
        # (name, method, path, roles allowed)
        ("tenant", "GET", "/api/v1/tenant", EVERYONE),
        ("devices.list", "GET", "/api/v1/devices", EVERYONE),
        ("devices.get", "GET", f"/api/v1/devices/{device['id']}", EVERYONE),
        ("devices.export", "GET", "/api/v1/devices/export", EVERYONE),
        ("groups.list", "GET", "/api/v1/groups", EVERYONE),
        ("groups.get", "GET", f"/api/v1/groups/{group['id']}", EVERYONE),
        ("devices.create", "POST", "/api/v1/devices", WRITE),
        ("devices.update", "PATCH", f"/api/v1/devices/{device['id']}", WRITE),
        ("devices.import", "POST", "/api/v1/devices/import", WRITE),
        ("groups.create", "POST", "/api/v1/groups", WRITE),
        ("groups.update", "PATCH", f"/api/v1/groups/{group['id']}", WRITE),
        ("groups.members", "POST", f"/api/v1/groups/{group['id']}/members", WRITE),
        ("apikeys.list", "GET", KEYS, ("admin",)),
        ("apikeys.create", "POST", KEYS, ("admin",)),
        ("audit", "GET", "/api/v1/audit", ("admin",)),
    ]
    outcome = {}
    for role in ("viewer", "crew", "operator", "admin"):
        for name, method, path, _ in checks:
            kwargs = {}
            if name == "devices.update":
                kwargs["json"] = {"district": f"d-{role}"}
            elif name == "groups.update":
                kwargs["json"] = {"description": role}
            elif name == "groups.members":
                kwargs["json"] = {"device_ids": [device["id"]]}
            elif name == "devices.import":
                kwargs = {"content": f"kind,endpoint,lat,lon\nstreetlight,imp-{next(serial)},37.5,126.9\n",
                          "headers": {"content-type": "text/csv"}}
            elif method == "POST":
                kwargs["json"] = body_for(name)
            response = await clients[role].request(method, path, **kwargs)
            outcome[(name, role)] = response.status_code
    expected = {(name, role): (role in allowed) for name, _, _, allowed in checks for role in EVERYONE}
    wrong = {k: v for k, v in outcome.items() if (200 <= v < 300) != expected[k] or (not expected[k] and v != 403)}
    assert not wrong, wrong
    # Deletions last: revoke and decommission as each non-admin role (refused), then as admin.
    victim = (await issue(seoul, "viewer"))["api_key"]["id"]
    for role in ("operator", "crew", "viewer"):
        assert (await clients[role].delete(f"{KEYS}/{victim}")).status_code == 403
    assert (await clients["admin"].delete(f"{KEYS}/{victim}")).status_code == 200
    for role in ("crew", "viewer"):
        assert (await clients[role].delete(f"/api/v1/devices/{device['id']}")).status_code == 403
        assert (await clients[role].delete(f"/api/v1/groups/{group['id']}")).status_code == 403
    assert (await clients["operator"].delete(f"/api/v1/groups/{group['id']}")).status_code in (200, 204)
    assert (await clients["operator"].delete(f"/api/v1/devices/{device['id']}")).status_code == 200
    for client in clients.values():
        if client is not seoul.client:
            await client.aclose()
