"""Crews over real HTTP: home bases on create and PATCH, positions reported by crew keys only,
and operators asking for the nearest crew when they open a work order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from fleet.access.models import Role
from tests.api.workorder_helpers import WORKORDERS, add_crew, add_device, create_order, crew_client

CREWS = "/api/v1/crews"
POSITION = f"{CREWS}/me/position"


async def test_a_crew_is_created_with_or_without_a_home_base_and_patched(seoul, busan):
    plain = await add_crew(seoul, "North team")
    assert (plain["home_base"], plain["position"]) == (None, None)
    based = await seoul.client.post(CREWS, json={"name": "South team", "home_base": {"lat": 37.56, "lon": 127.0}})
    assert based.status_code == 201 and based.json()["home_base"] == {"lat": 37.56, "lon": 127.0}

    moved = await seoul.client.patch(f"{CREWS}/{plain['id']}", json={"home_base": {"lat": 37.6, "lon": 126.9}})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["name"], moved.json()["home_base"]) == ("North team", {"lat": 37.6, "lon": 126.9})
    renamed = await seoul.client.patch(f"{CREWS}/{plain['id']}", json={"name": "Northern team"})
    assert renamed.json()["home_base"] == {"lat": 37.6, "lon": 126.9}  # what is left out stays
    cleared = await seoul.client.patch(f"{CREWS}/{plain['id']}", json={"home_base": None})
    assert (cleared.json()["name"], cleared.json()["home_base"]) == ("Northern team", None)
    assert (await seoul.client.get(f"{CREWS}/{plain['id']}")).json() == cleared.json()

    assert (await seoul.client.patch(f"{CREWS}/{plain['id']}", json={"name": "South team"})).status_code == 409
    assert (await seoul.client.patch(f"{CREWS}/{plain['id']}", json={"name": " \t"})).status_code == 422
    for bad in ({"home_base": {"lat": 91, "lon": 0}}, {"home_base": {"lat": 37.5}}, {"colour": "red"}):
        assert (await seoul.client.patch(f"{CREWS}/{plain['id']}", json=bad)).status_code == 400, bad
    assert (await busan.client.patch(f"{CREWS}/{plain['id']}", json={"name": "ours"})).status_code == 404

    audit = (await seoul.client.get("/api/v1/audit", params={"action": "crew.update"})).json()["items"]
    assert [(e["before"]["home_base"], e["after"]["home_base"]) for e in audit][-1] == (
        None, {"lat": 37.6, "lon": 126.9})
    assert len(audit) == 3


async def test_only_a_crew_key_reports_a_position_and_the_newest_fix_is_kept(db, seoul, api_url):
    crew = await add_crew(seoul, "North team")
    refused = await seoul.client.put(POSITION, json={"lat": 37.5, "lon": 127.0})
    assert refused.status_code == 422 and refused.headers["content-type"].startswith("application/problem+json")
    async with await crew_client(db, seoul, crew["id"], api_url) as tablet:
        reported = await tablet.put(POSITION, json={"lat": 37.5, "lon": 127.0, "accuracy_m": 8})
        assert reported.status_code == 200, reported.text
        position = reported.json()["position"]
        assert (position["lat"], position["lon"], position["accuracy_m"]) == (37.5, 127.0, 8)
        at = datetime.fromisoformat(position["at"])
        assert abs(at - datetime.now(UTC)) < timedelta(minutes=5)

        # A fix the tablet kept while offline arrives after a newer one: it does not win.
        late = await tablet.put(POSITION, json={"lat": 37.6, "lon": 127.1, "at": (at - timedelta(hours=1)).isoformat()})
        assert late.status_code == 200 and late.json()["position"] == position
        without_accuracy = await tablet.put(POSITION, json={"lat": 37.51, "lon": 127.01})
        assert without_accuracy.json()["position"]["accuracy_m"] is None

        for bad in ({"lat": 90.5, "lon": 0}, {"lat": 37.5, "lon": 181}, {"lat": 37.5}, {"lat": 37.5, "lon": 127.0,
                    "accuracy_m": -1}, {"lat": 37.5, "lon": 127.0, "at": "2026-12-06T10:00:00"},
                    {"lat": 37.5, "lon": 127.0, "speed": 3}):
            assert (await tablet.put(POSITION, json=bad)).status_code == 400, bad
    fetched = (await seoul.client.get(f"{CREWS}/{crew['id']}")).json()
    assert (fetched["position"]["lat"], fetched["position"]["lon"]) == (37.51, 127.01)

    viewer = await seoul.client.post("/api/v1/apikeys", json={"role": Role.VIEWER.value, "name": "wall screen"})
    async with httpx.AsyncClient(base_url=api_url, headers={
            "Authorization": f"Bearer {viewer.json()['key']}"}) as wall:
        assert (await wall.put(POSITION, json={"lat": 37.5, "lon": 127.0})).status_code == 422


async def test_an_operator_asks_for_the_nearest_crew(db, seoul, api_url):
    device = await add_device(seoul, 1, 37.50, 127.00)
    unplaced = await create_order(seoul.client, device_ids=[device["id"]], assign="nearest_crew")
    assert (unplaced["status"], unplaced.get("crew_id")) == ("new", None)  # no crew is anywhere yet

    far = await seoul.client.post(CREWS, json={"name": "Far", "home_base": {"lat": 37.60, "lon": 127.0}})
    moving = await add_crew(seoul, "Moving")
    async with await crew_client(db, seoul, moving["id"], api_url) as tablet:
        assert (await tablet.put(POSITION, json={"lat": 37.501, "lon": 127.0})).status_code == 200
        order = await create_order(seoul.client, device_ids=[device["id"]], assign="nearest_crew")
        assert (order["status"], order["crew_id"]) == ("assigned", moving["id"])
        mine = (await tablet.get(WORKORDERS, params={"assigned_to": "me"})).json()["items"]
        assert [o["id"] for o in mine] == [order["id"]]
    # A work order by its location alone goes to whoever is nearest to that.
    by_place = await create_order(seoul.client, location={"lat": 37.599, "lon": 127.0}, assign="nearest_crew")
    assert by_place["crew_id"] == far.json()["id"]

    both = await seoul.client.post(WORKORDERS, json={"type": "repair_lamp", "device_ids": [device["id"]],
                                                     "crew_id": moving["id"], "assign": "nearest_crew"})
    assert both.status_code == 422
    unknown = await seoul.client.post(WORKORDERS, json={"type": "repair_lamp", "device_ids": [device["id"]],
                                                        "assign": "whoever"})
    assert unknown.status_code == 400
    # The contract's body, without `assign`, still opens an unassigned work order.
    plain = await create_order(seoul.client, device_ids=[device["id"]], notes="as before")
    assert (plain["status"], plain.get("crew_id")) == ("new", None)


async def test_crews_are_the_control_rooms_to_make_and_move(db, seoul, api_url):
    crew = (await seoul.client.post("/api/v1/crews", json={"name": "North team"})).json()
    async with await crew_client(db, seoul, crew["id"], api_url) as tablet:
        assert (await tablet.post("/api/v1/crews", json={"name": "Rogue team"})).status_code == 403
        moved = await tablet.patch(f"/api/v1/crews/{crew['id']}", json={"home_base": {"lat": 37.5, "lon": 127.0}})
        assert moved.status_code == 403
        assert (await tablet.get(f"/api/v1/crews/{crew['id']}")).status_code == 200


async def test_a_crew_cannot_rewrite_the_citys_work_order_rules(db, seoul, api_url):
    crew = (await seoul.client.post("/api/v1/crews", json={"name": "North team"})).json()
    async with await crew_client(db, seoul, crew["id"], api_url) as tablet:
        assert (await tablet.get("/api/v1/workorders/rules")).status_code == 200
        assert (await tablet.put("/api/v1/workorders/rules", json={"alarm_rules": []})).status_code == 403
