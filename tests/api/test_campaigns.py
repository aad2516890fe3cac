"""Firmware campaigns and maintenance windows over real HTTP, and the city's approval setting."""

from __future__ import annotations

from uuid import UUID

import httpx
import pytest

from fleet.access.models import Role
from tests.fleet.campaigns.firmware_helpers import add_devices, add_image, another_key, set_state

CAMPAIGNS = "/api/v1/firmware/campaigns"
WINDOWS = "/api/v1/firmware/windows"


@pytest.fixture
def client_for(api_url):
    clients: list[httpx.AsyncClient] = []

    def make(secret: str) -> httpx.AsyncClient:
        clients.append(httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {secret}"}))
        return clients[-1]
    return make


async def create(city, **body) -> dict:
    response = await city.client.post(CAMPAIGNS, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_campaign_from_draft_to_abort(db, seoul):
    image = await add_image(db, seoul.tenant_id, "2.0.0", models=("SL-1",))
    ids = [str(d) for d in await add_devices(db, seoul.tenant_id, 200, prefix="sl")]
    odd = [str(d) for d in await add_devices(db, seoul.tenant_id, 1, prefix="odd", model="WB-2")]
    campaign = await create(seoul, image_id=str(image), target={"device_ids": ids + odd}, name="spring 2.0",
                            waves={"canary_percent": 1, "growth": 4}, thresholds={"error_percent": 20},
                            window={"start": "01:00", "end": "05:00"}, concurrency=50, health_period_s=60)
    assert (campaign["status"], campaign["name"], campaign["device_count"], campaign["wave_count"]) == (
        "draft", "spring 2.0", 200, 5)
    assert (campaign["image_id"], campaign["image_version"]) == (str(image), "2.0.0")
    assert [w["devices"] for w in campaign["waves"]] == [2, 8, 32, 128, 30]
    assert campaign["settings"]["window"] == {"start": "01:00", "end": "05:00"}
    assert campaign["settings"]["thresholds"]["error_percent"] == 20
    assert campaign["counts"]["succeeded"] == 0 and campaign["counts"]["failed"] == 0
    assert campaign["counts"]["skipped"] == 1 and campaign["target"] == {"device_ids": ids + odd}

    skipped = (await seoul.client.get(f"{CAMPAIGNS}/{campaign['id']}/devices", params={"state": "skipped"})).json()
    assert [(d["device_id"], d["reason"], d["endpoint"]) for d in skipped["items"]] == [(odd[0], "incompatible", "odd-1")]

    started = await seoul.client.post(f"{CAMPAIGNS}/{campaign['id']}/start")
    assert started.status_code == 200, started.text
    assert (started.json()["status"], started.json()["counts"]["waiting"]) == ("running", 2)

    # Every device over all pages, by wave.
    seen, cursor = [], None
    while True:
        page = (await seoul.client.get(f"{CAMPAIGNS}/{campaign['id']}/devices",
                                       params={"limit": 70} | ({"cursor": cursor} if cursor else {}))).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 201 and len({d["device_id"] for d in seen}) == 201
    assert [d["wave"] for d in seen] == sorted(d["wave"] for d in seen)

    canary = (await seoul.client.get(f"{CAMPAIGNS}/{campaign['id']}/devices", params={"wave": 0})).json()["items"]
    await set_state(db, seoul.tenant_id, UUID(campaign["id"]), [UUID(canary[0]["device_id"])], "succeeded")
    await set_state(db, seoul.tenant_id, UUID(campaign["id"]), [UUID(canary[1]["device_id"])], "failed", "rolled_back")
    shown = (await seoul.client.get(f"{CAMPAIGNS}/{campaign['id']}")).json()
    assert (shown["counts"]["succeeded"], shown["counts"]["failed"]) == (1, 1)
    assert shown["waves"][0]["counts"]["succeeded"] == 1 and shown["expected_finish"] is not None
    timeline = (await seoul.client.get(f"{CAMPAIGNS}/{campaign['id']}/devices/{canary[1]['device_id']}")).json()
    assert timeline["device"]["reason"] == "rolled_back"
    assert [s["state"] for s in timeline["timeline"]] == ["pending", "waiting", "failed"]

    for action, status in (("pause", "paused"), ("resume", "running"), ("retry", "running"), ("abort", "aborted")):
        response = await seoul.client.post(f"{CAMPAIGNS}/{campaign['id']}/{action}")
        assert (response.status_code, response.json()["status"]) == (200, status), response.text
    assert response.json()["counts"]["cancelled"] == 199 and response.json()["counts"]["succeeded"] == 1
    assert (await seoul.client.post(f"{CAMPAIGNS}/{campaign['id']}/resume")).status_code == 409
    assert (await seoul.client.delete(f"{CAMPAIGNS}/{campaign['id']}")).status_code == 409

    listed = (await seoul.client.get(CAMPAIGNS, params={"status": "aborted"})).json()
    assert [c["id"] for c in listed["items"]] == [campaign["id"]]
    assert (await seoul.client.get(CAMPAIGNS, params={"status": "running"})).json()["items"] == []
    audit = (await seoul.client.get("/api/v1/audit", params={"entity_type": "campaign"})).json()["items"]
    assert [e["action"] for e in reversed(audit)] == ["campaign.create", "campaign.start", "campaign.pause",
                                                      "campaign.resume", "campaign.retry", "campaign.abort"]


async def test_group_targets_conflicts_lists_and_drafts(db, seoul):
    image = await add_image(db, seoul.tenant_id)
    ids = [str(d) for d in await add_devices(db, seoul.tenant_id, 3, prefix="g")]
    group = (await seoul.client.post("/api/v1/groups", json={"name": "night", "device_ids": ids[:2]})).json()
    first = await create(seoul, image_id=str(image), target={"group_id": group["id"]})
    assert first["device_count"] == 2
    refused = await seoul.client.post(CAMPAIGNS, json={"image_id": str(image), "target": {"device_ids": ids}})
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
    assert first["id"] in refused.json()["detail"]
    second = await create(seoul, image_id=str(image), target={"device_ids": ids[2:]},
                          start_at="2099-01-01T00:00:00+09:00")
    assert second["start_at"].startswith("2098-12-31T15:00:00")

    page = (await seoul.client.get(CAMPAIGNS, params={"limit": 1})).json()
    assert [c["id"] for c in page["items"]] == [second["id"]]
    rest = (await seoul.client.get(CAMPAIGNS, params={"limit": 1, "cursor": page["next_cursor"]})).json()
    assert [c["id"] for c in rest["items"]] == [first["id"]] and rest["next_cursor"] is None

    scheduled = (await seoul.client.post(f"{CAMPAIGNS}/{second['id']}/start")).json()
    assert scheduled["status"] == "scheduled" and scheduled["counts"]["pending"] == 1
    cancelled = (await seoul.client.post(f"{CAMPAIGNS}/{second['id']}/cancel", json={"device_ids": ids[2:]})).json()
    assert cancelled["counts"]["cancelled"] == 1

    assert (await seoul.client.delete(f"{CAMPAIGNS}/{first['id']}")).status_code == 204
    assert (await seoul.client.get(f"{CAMPAIGNS}/{first['id']}")).status_code == 404

    for body, field in (({"image_id": str(image), "target": {"device_ids": ids}, "waves": {"canary": 1}}, "waves"),
                        ({"image_id": str(UUID(int=1)), "target": {"device_ids": ids}}, "image_id"),
                        ({"image_id": str(image), "target": {"device_ids": ids},
                          "window": {"start": "01:00", "end": "01:00"}}, "window")):
        response = await seoul.client.post(CAMPAIGNS, json=body)
        assert response.status_code == 422 and field in {e["field"] for e in response.json()["errors"]}, response.text


async def test_approval_and_who_may_do_what(db, seoul, client_for):
    image = await add_image(db, seoul.tenant_id)
    ids = [str(d) for d in await add_devices(db, seoul.tenant_id, 2, prefix="a")]
    _, viewer = await another_key(db, seoul.tenant_id, Role.VIEWER, "viewer")
    _, operator = await another_key(db, seoul.tenant_id, Role.OPERATOR, "operator")
    _, second = await another_key(db, seoul.tenant_id, Role.ADMIN, "second admin")
    viewer, operator, second = client_for(viewer), client_for(operator), client_for(second)

    tenant = (await seoul.client.get("/api/v1/tenant")).json()
    assert tenant["firmware_approval_required"] is False
    assert (await operator.patch("/api/v1/tenant", json={"firmware_approval_required": True})).status_code == 403
    changed = await seoul.client.patch("/api/v1/tenant", json={"firmware_approval_required": True})
    assert changed.status_code == 200 and changed.json()["firmware_approval_required"] is True
    assert (await seoul.client.patch("/api/v1/tenant", json={})).json()["firmware_approval_required"] is True
    assert (await seoul.client.get("/api/v1/tenant")).json()["firmware_approval_required"] is True
    assert (await seoul.client.patch("/api/v1/tenant", json={"slug": "x"})).status_code == 400

    body = {"image_id": str(image), "target": {"device_ids": ids}}
    assert (await viewer.post(CAMPAIGNS, json=body)).status_code == 403
    campaign = (await operator.post(CAMPAIGNS, json=body)).json()
    assert (await viewer.post(f"{CAMPAIGNS}/{campaign['id']}/start")).status_code == 403
    assert (await viewer.get(f"{CAMPAIGNS}/{campaign['id']}")).status_code == 200
    waiting = (await seoul.client.post(f"{CAMPAIGNS}/{campaign['id']}/start")).json()
    assert waiting["status"] == "awaiting_approval"
    assert (await operator.post(f"{CAMPAIGNS}/{campaign['id']}/approve")).status_code == 403
    same = await seoul.client.post(f"{CAMPAIGNS}/{campaign['id']}/approve")
    assert same.status_code == 409 and "second admin" in same.json()["detail"]
    approved = await second.post(f"{CAMPAIGNS}/{campaign['id']}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "running"
    assert approved.json()["counts"]["waiting"] == 1


async def test_maintenance_windows(db, seoul, busan):
    group = (await seoul.client.post("/api/v1/groups", json={"name": "old town"})).json()
    foreign = (await busan.client.post("/api/v1/groups", json={"name": "harbour"})).json()
    city = await seoul.client.post(WINDOWS, json={"start": "22:00", "end": "04:00", "name": "nights"})
    assert city.status_code == 201, city.text
    assert city.json() | {"id": None} == {"id": None, "group_id": None, "name": "nights", "start": "22:00",
                                          "end": "04:00", "weekdays": [1, 2, 3, 4, 5, 6, 7]}
    own = await seoul.client.post(WINDOWS, json={"start": "01:00", "end": "05:00", "group_id": group["id"],
                                                 "weekdays": [6, 7]})
    assert own.status_code == 201 and own.json()["weekdays"] == [6, 7]
    theirs = await seoul.client.post(WINDOWS, json={"start": "01:00", "end": "05:00", "group_id": foreign["id"]})
    assert theirs.status_code == 422 and theirs.json()["errors"][0]["field"] == "group_id"
    assert (await seoul.client.post(WINDOWS, json={"start": "01:00", "end": "01:00"})).status_code == 422
    assert (await seoul.client.post(WINDOWS, json={"start": "25:00", "end": "01:00"})).status_code == 400

    assert [w["id"] for w in (await seoul.client.get(WINDOWS)).json()] == [city.json()["id"], own.json()["id"]]
    assert [w["id"] for w in (await seoul.client.get(WINDOWS, params={"group_id": group["id"]})).json()] == [
        own.json()["id"]]
    assert (await busan.client.get(WINDOWS)).json() == []
    assert (await busan.client.delete(f"{WINDOWS}/{city.json()['id']}")).status_code == 404
    assert (await seoul.client.delete(f"{WINDOWS}/{city.json()['id']}")).status_code == 204
    assert [w["id"] for w in (await seoul.client.get(WINDOWS)).json()] == [own.json()["id"]]
