"""The audit log over real HTTP: what each mutation records, filters, newest-first cursor pages,
and that the application role can only append to it."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import httpx
import pytest

AUDIT = "/api/v1/audit"
LIGHT = {"kind": "streetlight", "location": {"lat": 37.5665, "lon": 126.978}, "district": "Jung-gu"}


async def entries(city, **params) -> list[dict]:
    response = await city.client.get(AUDIT, params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_each_mutation_is_recorded_with_key_entity_and_before_after(seoul):
    operator_created = (await seoul.client.post("/api/v1/apikeys", json={"role": "operator"})).json()
    operator_id = operator_created["api_key"]["id"]
    operator = httpx.AsyncClient(base_url=str(seoul.client.base_url),
                                 headers={"Authorization": f"Bearer {operator_created['key']}"})
    created = await operator.post("/api/v1/devices", json={**LIGHT, "endpoint": "sl-1"}, headers={"X-Request-ID": "req-create-1"})
    device = created.json()
    assert created.headers["x-request-id"] == "req-create-1"
    patched = await operator.patch(f"/api/v1/devices/{device['id']}", json={"district": "Mapo-gu"})
    await operator.delete(f"/api/v1/devices/{device['id']}")
    imported = await operator.post("/api/v1/devices/import", content=b"kind,endpoint,lat,lon\nwaste_bin,wb-1,37.5,126.9\n",
                                   headers={"content-type": "text/csv"})
    group = (await operator.post("/api/v1/groups", json={"name": "night"})).json()
    revoked = await seoul.client.delete(f"/api/v1/apikeys/{operator_id}")
    await operator.aclose()

    log = await entries(seoul)
    ids = [e["id"] for e in log]
    assert ids == sorted(ids, reverse=True)
    by_action = {}
    for entry in log:
        by_action.setdefault(entry["action"], []).append(entry)
    create = next(e for e in by_action["device.create"] if e["entity_id"] == device["id"])
    update, decommission = by_action["device.update"][0], by_action["device.decommission"][0]
    for entry in (create, update, decommission):
        assert (entry["api_key_id"], entry["actor"], entry["entity_type"]) == (
            operator_id, f"key:{operator_id}", "device")
    assert create["entity_id"] == device["id"] and create["before"] is None
    assert create["after"]["endpoint"] == "sl-1" and create["request_id"] == "req-create-1"
    assert update["before"]["district"] == "Jung-gu" and update["after"]["district"] == "Mapo-gu"
    assert update["request_id"] == patched.headers["x-request-id"]
    assert decommission["before"]["status"] == "provisioned" and decommission["after"]["status"] == "decommissioned"
    imported_entry = [e for e in by_action["device.create"] if e["entity_id"] == imported.json()["ids"][0]]
    assert len(imported_entry) == 1 and imported_entry[0]["request_id"] == imported.headers["x-request-id"]
    assert any(e["entity_type"] == "group" or e["entity_id"] == group["id"] for e in log)
    key_entries = [e for e in log if e["entity_type"] == "api_key" and e["entity_id"] == operator_id]
    assert [e["action"] for e in key_entries] == ["apikey.revoke", "apikey.create"]
    assert key_entries[0]["api_key_id"] == str(seoul.principal.api_key_id)
    assert key_entries[0]["before"]["revoked_at"] is None and key_entries[0]["after"]["revoked_at"]
    assert key_entries[0]["request_id"] == revoked.headers["x-request-id"]
    assert "key_hash" not in str(key_entries) and operator_created["key"] not in str(log)


async def test_filters(seoul, busan):
    devices = []
    for n in range(3):
        devices.append((await seoul.client.post("/api/v1/devices", json={**LIGHT, "endpoint": f"sl-{n}"})).json())
    await seoul.client.patch(f"/api/v1/devices/{devices[0]['id']}", json={"district": "Mapo-gu"})
    viewer = (await seoul.client.post("/api/v1/apikeys", json={"role": "viewer"})).json()
    await busan.client.post("/api/v1/devices", json={**LIGHT, "endpoint": "busan-1"})

    assert {e["entity_type"] for e in await entries(seoul, entity_type="api_key")} == {"api_key"}
    assert [e["action"] for e in await entries(seoul, entity_id=devices[0]["id"])] == [
        "device.update", "device.create"]
    assert [e["entity_id"] for e in await entries(seoul, action="device.create")] == [
        d["id"] for d in reversed(devices)]
    assert [e["entity_id"] for e in await entries(seoul, action="device.create", entity_type="api_key")] == []
    by_key = await entries(seoul, api_key_id=str(seoul.principal.api_key_id))
    assert len(by_key) == 5 and all(e["api_key_id"] == str(seoul.principal.api_key_id) for e in by_key)
    assert await entries(seoul, api_key_id=viewer["api_key"]["id"]) == []
    # since is inclusive, until exclusive.
    everything = await entries(seoul)
    middle = everything[len(everything) // 2]
    since = await entries(seoul, since=middle["at"])
    until = await entries(seoul, until=middle["at"])
    assert {e["id"] for e in since} | {e["id"] for e in until} == {e["id"] for e in everything}
    assert all(e["at"] >= middle["at"] for e in since) and all(e["at"] < middle["at"] for e in until)
    future = (datetime.fromisoformat(everything[0]["at"]) + timedelta(hours=1)).isoformat()
    assert await entries(seoul, since=future) == []
    assert len(await entries(seoul, since=middle["at"], until=future)) == len(since)
    # Busan's entries never show, whatever the filter.
    assert "busan-1" not in str(everything)
    assert await entries(seoul, entity_id=str(busan.principal.api_key_id)) == []
    assert await entries(seoul, api_key_id=str(busan.principal.api_key_id)) == []


async def test_cursor_pages_newest_first(seoul):
    for n in range(11):
        await seoul.client.post("/api/v1/devices", json={**LIGHT, "endpoint": f"sl-{n}"})
    everything = await entries(seoul, limit=1000)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 4, "action": "device.create"} | ({"cursor": cursor} if cursor else {})
        page = (await seoul.client.get(AUDIT, params=params)).json()
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [e["entity_id"] for e in seen] == [e["entity_id"] for e in everything if e["action"] == "device.create"]
    assert [e["id"] for e in seen] == sorted({e["id"] for e in seen}, reverse=True)
    exact = (await seoul.client.get(AUDIT, params={"limit": len(everything)})).json()
    assert exact["next_cursor"] is None and len(exact["items"]) == len(everything)


@pytest.mark.parametrize("params", [
    {"cursor": "abc"}, {"cursor": "-1"}, {"cursor": "9" * 19}, {"cursor": "9" * 40}, {"cursor": "١٢"},
    {"limit": "0"}, {"limit": "1001"}, {"limit": "many"},
    {"since": "yesterday"}, {"until": "2024-13-45"}, {"api_key_id": "not-a-uuid"},
])
async def test_bad_audit_queries_are_client_errors(seoul, params):
    response = await seoul.client.get(AUDIT, params=params)
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_application_role_cannot_change_or_delete_audit(seoul, db):
    await seoul.client.post("/api/v1/devices", json={**LIGHT, "endpoint": "sl-1"})
    statements = [
        "update audit_log set action = 'nothing happened'",
        "delete from audit_log",
        "truncate audit_log",
        "update audit_log set before = null where id = (select max(id) from audit_log)",
    ]
    for sql in statements:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with db.tenant_tx(seoul.tenant_id) as conn:
                await conn.execute(sql)
    # Appending stays possible, but only for the transaction's own city.
    async with db.tenant_tx(seoul.tenant_id) as conn:
        await conn.execute("insert into audit_log (tenant_id, actor, action, entity_type) "
                           "values ($1, 'test', 'test.append', 'test')", seoul.tenant_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.tenant_tx(seoul.tenant_id) as conn:
            await conn.execute("insert into audit_log (tenant_id, actor, action, entity_type) "
                               "values (gen_random_uuid(), 'test', 'test.append', 'test')")
    actions = [e["action"] for e in await entries(seoul)]
    assert actions[:2] == ["test.append", "device.create"]
