"""A device's commands over real HTTP: newest first, page by page, by status, for any key that
reads, and behind the wall (another city's device is not found)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from fleet.commands.models import Operation
from fleet.commands.repository import CommandRepository

LIGHT = {"kind": "streetlight", "location": {"lat": 37.57, "lon": 126.98}, "district": "Jung-gu",
         "nominal_wattage": 90}


async def add_light(city, n: int) -> str:
    response = await city.client.post("/api/v1/devices", json={**LIGHT, "endpoint": f"{city.slug}-light-{n}"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def send(city, device_ids: list[str], operation: str, path: str, value=None) -> dict:
    """A command to never-registered devices: it stays queued."""
    body = {"target": {"device_ids": device_ids}, "operation": operation, "path": path}
    if value is not None:
        body["value"] = value
    response = await city.client.post("/api/v1/commands", json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def every_page(client: httpx.AsyncClient, url: str, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        response = await client.get(url, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= int(params.get("limit", 100))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_newest_first_page_by_page_with_who_asked(seoul):
    light, other = await add_light(seoul, 1), await add_light(seoul, 2)
    sent = [await send(seoul, [light], "read", "/3416/0/3"),
            await send(seoul, [light, other], "write", "/3416/0/1", 40),
            await send(seoul, [light], "execute", "/3/0/4"),
            await send(seoul, [other], "read", "/3/0/0")]
    url = f"/api/v1/devices/{light}/commands"
    whole = (await seoul.client.get(url)).json()
    assert whole["next_cursor"] is None
    assert [c["batch_id"] for c in whole["items"]] == [sent[2]["id"], sent[1]["id"], sent[0]["id"]]
    newest = whole["items"][0]
    assert set(newest) == {"id", "batch_id", "operation", "path", "value", "status", "attempts", "result", "error",
                           "created_at", "sent_at", "completed_at", "expires_at", "origin", "requested_by",
                           "waiting_reason", "next_attempt_at"}
    assert (newest["operation"], newest["path"], newest["status"], newest["sent_at"]) == (
        "execute", "/3/0/4", "queued", None)
    assert (newest["origin"], newest["requested_by"]) == ("api", f"key:{seoul.principal.api_key_id}")
    assert whole["items"][1]["value"] == 40
    # The id is this device's share of the batch, as GET /api/v1/commands/{batch_id} counts it.
    batch = (await seoul.client.get(f"/api/v1/commands/{sent[1]['id']}")).json()
    assert [d["device_id"] for d in batch["devices"]].count(light) == 1
    assert await every_page(seoul.client, url, limit="1") == whole["items"]
    assert len((await seoul.client.get(url, params={"limit": "2"})).json()["items"]) == 2


async def test_commands_made_in_one_transaction_are_each_listed_once(db, seoul):
    """One created_at for all of them: the id orders them, and the cursor does not skip or repeat."""
    light = await add_light(seoul, 1)
    expires = datetime.now(UTC) + timedelta(hours=1)
    async with db.tenant_tx(seoul.tenant_id) as conn:
        repo = CommandRepository(conn)
        for path in ("/3/0/0", "/3/0/1", "/3/0/2", "/3/0/3"):
            await repo.insert_batch(seoul.tenant_id, Operation.READ, path, None, {}, [uuid.UUID(light)],
                                    None, "lighting", expires)
    listed = await every_page(seoul.client, f"/api/v1/devices/{light}/commands", limit="3")
    assert len({c["id"] for c in listed}) == len(listed) == 4
    assert len({c["created_at"] for c in listed}) == 1
    assert [c["id"] for c in listed] == sorted((c["id"] for c in listed), reverse=True)
    assert {(c["origin"], c["requested_by"]) for c in listed} == {("lighting", None)}


async def test_a_package_uri_is_listed_without_its_download_token(db, seoul):
    """Only the device's own command keeps the token, for the dispatcher: a viewer sees none."""
    light = await add_light(seoul, 1)
    uri = "coap://192.0.2.1:5683/fw/s3cr3t-t0ken"
    async with db.tenant_tx(seoul.tenant_id) as conn:
        await CommandRepository(conn).insert_batch(
            seoul.tenant_id, Operation.WRITE, "/5/0/1", uri, {}, [uuid.UUID(light)], None, "firmware:x",
            datetime.now(UTC) + timedelta(hours=1))
    response = await seoul.client.get(f"/api/v1/devices/{light}/commands")
    assert "s3cr3t" not in response.text
    assert response.json()["items"][0]["value"] == "coap://192.0.2.1:5683/fw/<token>"


async def test_filtered_by_status(seoul):
    light = await add_light(seoul, 1)
    cancelled = await send(seoul, [light], "read", "/3/0/0")
    await seoul.client.post(f"/api/v1/commands/{cancelled['id']}/cancel")
    queued = await send(seoul, [light], "read", "/3/0/1")
    url = f"/api/v1/devices/{light}/commands"

    async def batches(**params) -> list[str]:
        response = await seoul.client.get(url, params=params)
        assert response.status_code == 200, response.text
        return [c["batch_id"] for c in response.json()["items"]]

    assert await batches(status="cancelled") == [cancelled["id"]]
    assert await batches(status="queued") == [queued["id"]]
    assert await batches(status="queued,cancelled") == [queued["id"], cancelled["id"]]
    assert await batches(status=["sent", "cancelled"]) == [cancelled["id"]]
    assert await batches(status="succeeded") == []
    for params in ({"status": "done"}, {"cursor": "not-a-cursor"}, {"limit": "0"}, {"limit": "1001"}):
        response = await seoul.client.get(url, params=params)
        assert response.status_code in (400, 422), (params, response.text)
    # Another list's cursor is not this one's.
    for name in ("north", "south"):
        assert (await seoul.client.post("/api/v1/groups", json={"name": name})).status_code == 201
    group_cursor = (await seoul.client.get("/api/v1/groups", params={"limit": "1"})).json()["next_cursor"]
    assert (await seoul.client.get(url, params={"cursor": group_cursor})).status_code == 422


async def test_any_key_that_reads_sees_them_behind_the_wall(seoul, busan, api_url):
    light = await add_light(seoul, 1)
    theirs = await add_light(busan, 1)
    await send(seoul, [light], "read", "/3/0/0")
    await send(busan, [theirs], "read", "/3/0/0")
    viewer_key = (await seoul.client.post("/api/v1/apikeys", json={"role": "viewer"})).json()["key"]
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {viewer_key}"}) as viewer:
        response = await viewer.get(f"/api/v1/devices/{light}/commands")
        assert response.status_code == 200 and len(response.json()["items"]) == 1
        # Another city's device is unknown here, as on every device route; so is a made-up one.
        for device in (theirs, str(uuid.uuid4())):
            response = await viewer.get(f"/api/v1/devices/{device}/commands")
            assert response.status_code == 404, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
    assert (await seoul.client.get(f"/api/v1/devices/{theirs}/commands")).status_code == 404
