"""GET /api/v1/commands over real HTTP: the city's past commands, newest first, filtered and paged,
and why a queued one waits."""

from __future__ import annotations

import httpx

from tests.api.test_device_commands import add_light, every_page, send


async def test_past_commands_newest_first_filtered_and_paged(seoul, busan, api_url):
    one, two = await add_light(seoul, 1), await add_light(seoul, 2)
    read = await send(seoul, [one], "read", "/3/0/0")
    write = await send(seoul, [one, two], "write", "/3416/0/1", 40)
    cancelled = await send(seoul, [two], "execute", "/3/0/4")
    assert (await seoul.client.post(f"/api/v1/commands/{cancelled['id']}/cancel")).status_code == 200
    await send(busan, [await add_light(busan, 1)], "read", "/3/0/0")
    viewer_key = (await seoul.client.post("/api/v1/apikeys", json={"role": "viewer"})).json()["key"]
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {viewer_key}"}) as viewer:
        listed = await every_page(viewer, "/api/v1/commands", limit=1)
    assert [c["id"] for c in listed] == [cancelled["id"], write["id"], read["id"]]
    assert listed[1]["counts"]["queued"] == 2 and listed[1]["device_count"] == 2 and listed[1]["origin"] == "api"
    assert listed[0]["counts"]["cancelled"] == 1 and listed[0]["requested_by"].startswith("key:")

    async def ids(**params) -> list[str]:
        return [c["id"] for c in await every_page(seoul.client, "/api/v1/commands", **params)]
    assert await ids(status="cancelled") == [cancelled["id"]]
    assert await ids(status="queued,cancelled", operation="read") == [read["id"]]
    assert await ids(device_id=one) == [write["id"], read["id"]]
    assert await ids(since=listed[1]["created_at"]) == [cancelled["id"], write["id"]]
    assert await ids(until=listed[1]["created_at"], origin="api") == [read["id"]]
    bad = await seoul.client.get("/api/v1/commands", params={"status": "lost"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"
    # Never registered: the devices' commands wait for them, and say so.
    shown = (await seoul.client.get(f"/api/v1/commands/{write['id']}")).json()
    assert {d["waiting_reason"] for d in shown["devices"]} == {"not_registered"}
