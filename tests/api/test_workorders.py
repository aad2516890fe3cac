"""Work orders and crews over real HTTP: create, read, change under If-Match, the status machine,
devices held in maintenance, lists near a point and for a crew, the crew's day, audit."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from fleet.workorders.routing import haversine_m
from tests.api.workorder_helpers import (WORKORDERS, add_crew, add_device, create_order, crew_client,
                                         patch_order)


async def test_crews_are_created_listed_and_unique(seoul, busan):
    north = await add_crew(seoul, "North team")
    await add_crew(seoul, "Alpha")
    assert (await seoul.client.post("/api/v1/crews", json={"name": "North team"})).status_code == 409
    assert (await seoul.client.post("/api/v1/crews", json={"name": ""})).status_code == 400
    assert [c["name"] for c in (await seoul.client.get("/api/v1/crews")).json()] == ["Alpha", "North team"]
    fetched = await seoul.client.get(f"/api/v1/crews/{north['id']}")
    assert fetched.status_code == 200 and fetched.json() == north
    assert (await busan.client.get(f"/api/v1/crews/{north['id']}")).status_code == 404


async def test_rest_keys_belong_to_crews_and_reporters_exist(seoul, busan):
    crew = await add_crew(seoul, "North team")
    made = await seoul.client.post("/api/v1/apikeys", json={"role": "crew", "crew_id": crew["id"]})
    assert made.status_code == 201, made.text
    assert made.json()["api_key"]["crew_id"] == crew["id"]
    wrong_role = await seoul.client.post("/api/v1/apikeys", json={"role": "operator", "crew_id": crew["id"]})
    assert wrong_role.status_code == 422
    foreign = await busan.client.post("/api/v1/apikeys", json={"role": "crew", "crew_id": crew["id"]})
    assert foreign.status_code == 422
    reporter = await seoul.client.post("/api/v1/apikeys", json={"role": "reporter"})
    assert reporter.status_code == 201 and reporter.json()["api_key"]["role"] == "reporter"


async def test_create_get_and_patch_with_versions(seoul):
    a = await add_device(seoul, 1, 37.50, 127.00)
    b = await add_device(seoul, 2, 37.52, 127.02)
    order = await create_order(seoul.client, device_ids=[a["id"], b["id"]], notes="two dark poles")
    assert (order["status"], order["version"], order["source"], order["priority"]) == ("new", 1, "operator", "high")
    assert order["location"] == pytest.approx({"lat": 37.51, "lon": 127.01})
    assert sorted(order["device_ids"]) == sorted([a["id"], b["id"]])
    # High: one day, to the end of that local day in Seoul.
    due = datetime.fromisoformat(order["due_by"]).astimezone(ZoneInfo("Asia/Seoul"))
    created = datetime.fromisoformat(order["created_at"]).astimezone(ZoneInfo("Asia/Seoul"))
    assert (due.hour, due.minute) == (0, 0) and due.date() == created.date() + timedelta(days=2)

    got = await seoul.client.get(f"{WORKORDERS}/{order['id']}")
    assert got.status_code == 200 and got.headers["etag"] == '"1"' and got.json() == order

    missing = await seoul.client.patch(f"{WORKORDERS}/{order['id']}", json={"notes": "x"})
    assert missing.status_code == 428
    changed = await patch_order(seoul.client, order, notes="bring a ladder", priority="urgent")
    assert (changed["version"], changed["notes"], changed["priority"]) == (2, "bring a ladder", "urgent")
    stale = await seoul.client.patch(f"{WORKORDERS}/{order['id']}", json={"notes": "late"},
                                     headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.json()["current_version"] == 2 and stale.headers["etag"] == '"2"'
    assert stale.headers["content-type"].startswith("application/problem+json")

    assert (await seoul.client.post(WORKORDERS, json={"type": "repair_lamp", "device_ids": ["00000000-0000-4000-8000-000000000000"]})).status_code == 422
    assert (await seoul.client.post(WORKORDERS, json={"type": "fix_everything", "device_ids": [a["id"]]})).status_code == 400
    by_location = await create_order(seoul.client, location={"lat": 37.6, "lon": 127.1}, type="other")
    assert by_location["device_ids"] == [] and by_location["location"] == {"lat": 37.6, "lon": 127.1}


async def test_status_machine_and_devices_in_maintenance(seoul):
    device = await add_device(seoul, 1, 37.50, 127.00)
    crew = await add_crew(seoul, "North team")
    order = await create_order(seoul.client, device_ids=[device["id"]])
    bad = await seoul.client.patch(f"{WORKORDERS}/{order['id']}", json={"status": "done"},
                                   headers={"If-Match": "1"})
    assert bad.status_code == 409
    no_crew = await seoul.client.patch(f"{WORKORDERS}/{order['id']}", json={"status": "assigned"},
                                       headers={"If-Match": "1"})
    assert no_crew.status_code == 422
    order = await patch_order(seoul.client, order, crew_id=crew["id"])
    assert order["status"] == "assigned" and order["crew_id"] == crew["id"]
    order = await patch_order(seoul.client, order, status="en_route")
    order = await patch_order(seoul.client, order, status="in_progress")
    assert (await seoul.client.get(f"/api/v1/devices/{device['id']}")).json()["status"] == "maintenance"
    await patch_order(seoul.client, order, expect=409, status="verified")
    order = await patch_order(seoul.client, order, status="done", resolution_code="lamp_replaced",
                              time_spent_minutes=35)
    assert (order["status"], order["resolution_code"], order["time_spent_minutes"]) == ("done", "lamp_replaced", 35)
    assert order["closed_at"] is not None
    assert (await seoul.client.get(f"/api/v1/devices/{device['id']}")).json()["status"] == "provisioned"
    await patch_order(seoul.client, order, expect=409, status="in_progress")

    audit = (await seoul.client.get("/api/v1/audit", params={"entity_type": "work_order",
                                                             "entity_id": order["id"]})).json()["items"]
    actions = [e["action"] for e in reversed(audit)]
    assert actions == ["work_order.create"] + ["work_order.update"] * 4
    assert audit[0]["after"]["status"] == "done" and audit[0]["before"]["status"] == "in_progress"


async def test_near_sorts_by_whole_metres_and_filters(seoul):
    crew = await add_crew(seoul, "North team")
    far = await create_order(seoul.client, location={"lat": 37.60, "lon": 127.00})
    near = await create_order(seoul.client, location={"lat": 37.501, "lon": 127.00}, crew_id=crew["id"])
    middle = await create_order(seoul.client, location={"lat": 37.55, "lon": 127.00})
    page = (await seoul.client.get(WORKORDERS, params={"near": "37.5,127.0"})).json()
    assert [o["id"] for o in page["items"]] == [near["id"], middle["id"], far["id"]]
    assert [o["distance_m"] for o in page["items"]] == [
        round(haversine_m((37.5, 127.0), (lat, 127.0))) for lat in (37.501, 37.55, 37.60)] == [111, 5560, 11120]
    first = (await seoul.client.get(WORKORDERS, params={"near": "37.5,127.0", "limit": 2})).json()
    second = (await seoul.client.get(WORKORDERS, params={"near": "37.5,127.0", "limit": 2,
                                                         "cursor": first["next_cursor"]})).json()
    assert [o["id"] for o in first["items"] + second["items"]] == [near["id"], middle["id"], far["id"]]
    assert second["next_cursor"] is None
    assigned = (await seoul.client.get(WORKORDERS, params={"status": "assigned"})).json()["items"]
    assert [o["id"] for o in assigned] == [near["id"]]
    both = (await seoul.client.get(f"{WORKORDERS}?status=assigned&status=new")).json()["items"]
    assert len(both) == 3
    assert len((await seoul.client.get(WORKORDERS, params={"status": "new,assigned"})).json()["items"]) == 3
    assert (await seoul.client.get(WORKORDERS, params={"status": "sleeping"})).status_code == 422
    assert [o["id"] for o in (await seoul.client.get(WORKORDERS, params={"crew": crew["id"]})).json()["items"]] == [near["id"]]
    assert (await seoul.client.get(WORKORDERS, params={"near": "north"})).status_code == 422


async def test_assigned_to_me_and_my_day(db, seoul, api_url):
    crew = await add_crew(seoul, "North team")
    other = await add_crew(seoul, "South team")
    # Stops on a line east of the start, created out of order; one belongs to another crew.
    stops = [0.03, 0.01, 0.04, 0.02]
    mine = [await create_order(seoul.client, location={"lat": 37.5, "lon": 127.0 + d}, crew_id=crew["id"])
            for d in stops]
    await create_order(seoul.client, location={"lat": 37.5, "lon": 127.005}, crew_id=other["id"])
    async with await crew_client(db, seoul, crew["id"], api_url) as tablet:
        listed = (await tablet.get(WORKORDERS, params={"assigned_to": "me"})).json()["items"]
        assert sorted(o["id"] for o in listed) == sorted(o["id"] for o in mine)
        day = await tablet.get(f"{WORKORDERS}/my-day", params={"start": "37.5,127.0"})
        assert day.status_code == 200, day.text
        expected = [mine[stops.index(d)]["id"] for d in sorted(stops)]
        assert [o["id"] for o in day.json()] == expected
        assert all(800 < o["distance_m"] < 900 for o in day.json())
        # The crew changes its own work orders.
        started = await patch_order(tablet, mine[0], status="en_route")
        assert started["status"] == "en_route"
    assert (await seoul.client.get(WORKORDERS, params={"assigned_to": "me"})).status_code == 422
    assert (await seoul.client.get(f"{WORKORDERS}/my-day")).status_code == 422
    by_operator = await seoul.client.get(f"{WORKORDERS}/my-day", params={"crew": crew["id"]})
    assert by_operator.status_code == 200 and len(by_operator.json()) == 4


async def test_the_city_rules_are_read_and_replaced(seoul, busan):
    defaults = (await seoul.client.get(f"{WORKORDERS}/rules")).json()
    assert defaults == {"alarm_rules": [], "due_hours": {"urgent": 4, "high": 24, "medium": 72, "low": 168},
                        "reopen_window_days": 7, "crew_position_fresh_minutes": 120}
    rules = {"alarm_rules": [{"alarm_types": ["bin_overflow"], "work_order_type": "empty_bin",
                              "min_severity": "major", "unacknowledged_minutes": 60, "priority": "medium"}],
             "due_hours": {"urgent": 2, "high": 8, "medium": 48, "low": 120}, "reopen_window_days": 3,
             "crew_position_fresh_minutes": 30}
    put = await seoul.client.put(f"{WORKORDERS}/rules", json=rules)
    # A rule that names no assignment leaves its work orders unassigned, as before there was one.
    rules["alarm_rules"][0]["assign"] = "none"
    assert put.status_code == 200 and put.json() == rules
    assert (await seoul.client.get(f"{WORKORDERS}/rules")).json() == rules
    assert (await busan.client.get(f"{WORKORDERS}/rules")).json() == defaults
    bad = await seoul.client.put(f"{WORKORDERS}/rules", json={"alarm_rules": [{"alarm_types": [],
                                                                               "work_order_type": "empty_bin"}]})
    assert bad.status_code == 400
    urgent = await create_order(seoul.client, location={"lat": 37.5, "lon": 127.0}, priority="urgent")
    created = datetime.fromisoformat(urgent["created_at"])
    assert datetime.fromisoformat(urgent["due_by"]) - created == timedelta(hours=2)


async def test_two_work_orders_on_one_device_give_it_back_once_both_close(seoul):
    device = await add_device(seoul, 1, 37.50, 127.00)
    crew = await add_crew(seoul, "North team")
    status = (await seoul.client.patch(f"/api/v1/devices/{device['id']}", json={"status": "provisioned"})).json()
    assert status["status"] == "provisioned"
    first = await create_order(seoul.client, device_ids=[device["id"]], crew_id=crew["id"])
    second = await create_order(seoul.client, device_ids=[device["id"]], crew_id=crew["id"], type="replace_controller")
    first = await patch_order(seoul.client, first, status="in_progress")
    second = await patch_order(seoul.client, second, status="in_progress")
    await patch_order(seoul.client, first, status="done")
    device_url = f"/api/v1/devices/{device['id']}"
    assert (await seoul.client.get(device_url)).json()["status"] == "maintenance"
    await patch_order(seoul.client, second, status="cancelled")
    assert (await seoul.client.get(device_url)).json()["status"] == "provisioned"
    # Maintenance set by hand is people's: a work order neither takes it nor gives it back.
    assert (await seoul.client.patch(device_url, json={"status": "maintenance"})).status_code == 200
    third = await create_order(seoul.client, device_ids=[device["id"]], crew_id=crew["id"])
    third = await patch_order(seoul.client, third, status="in_progress")
    await patch_order(seoul.client, third, status="done")
    assert (await seoul.client.get(device_url)).json()["status"] == "maintenance"


async def test_a_crew_works_its_own_orders_and_leaves_the_rest_to_the_control_room(db, seoul, api_url):
    device = await add_device(seoul, 1, 37.50, 127.00)
    north, south = await add_crew(seoul, "North team"), await add_crew(seoul, "South team")
    theirs = await create_order(seoul.client, device_ids=[device["id"]], crew_id=south["id"])
    free = await create_order(seoul.client, device_ids=[device["id"]])
    async with await crew_client(db, seoul, north["id"], api_url) as tablet:
        # Another crew's work order: neither changed nor photographed.
        await patch_order(tablet, theirs, expect=403, status="en_route")
        png = b"\x89PNG\r\n\x1a\n" + bytes(64)
        refused = await tablet.post(f"{WORKORDERS}/{theirs['id']}/attachments", content=png,
                                    headers={"Content-Type": "image/png"})
        assert refused.status_code == 403
        # An unassigned one the crew may take, but not hand on, re-prioritise or cancel.
        await patch_order(tablet, free, expect=403, crew_id=south["id"])
        await patch_order(tablet, free, expect=403, priority="low")
        await patch_order(tablet, free, expect=403, status="cancelled")
        taken = await patch_order(tablet, free, crew_id=north["id"])
        assert (taken["status"], taken["crew_id"]) == ("assigned", north["id"])
        started = await patch_order(tablet, taken, status="en_route", notes="on my way")
        assert started["status"] == "en_route"
    # The control room still may do everything.
    await patch_order(seoul.client, started, status="cancelled")


async def test_a_work_order_for_an_alarm_answers_it(db, seoul, busan):
    """The control room opens the work order for an alarm itself: the alarm's device joins it,
    done clears the alarm, and neither a second POST nor the city's rule opens another."""
    from fleet.workorders.automation import open_for_alarms
    from tests.fleet.workorders.conftest import raise_alarm

    lamp = await add_device(seoul, 1, 37.5, 127.0)
    alarm = await raise_alarm(db, seoul.tenant_id, lamp["id"], "lamp_failure", "major",
                              datetime.now(ZoneInfo("UTC")) - timedelta(hours=1))
    rules = {"alarm_rules": [{"alarm_types": ["lamp_failure"], "work_order_type": "repair_lamp",
                              "unacknowledged_minutes": 0}]}
    assert (await seoul.client.put(f"{WORKORDERS}/rules", json=rules)).status_code == 200
    order = await create_order(seoul.client, alarm_id=str(alarm), notes="lamp out")
    assert (order["alarm_id"], order["device_ids"], order["source"]) == (str(alarm), [lamp["id"]], "operator")
    again = await seoul.client.post(WORKORDERS, json={"type": "repair_lamp", "alarm_id": str(alarm)})
    assert again.status_code == 409, again.text
    assert await open_for_alarms(db) == 0
    elsewhere = await busan.client.post(WORKORDERS, json={"type": "repair_lamp", "alarm_id": str(alarm)})
    assert elsewhere.status_code == 422, elsewhere.text
    crew = await add_crew(seoul, "North team")
    for change in ({"crew_id": crew["id"]}, {"status": "in_progress"}, {"status": "done"}):
        order = await patch_order(seoul.client, order, **change)
    cleared = (await seoul.client.get(f"/api/v1/alarms/{alarm}")).json()
    assert (cleared["status"], cleared["clear_reason"]) == ("cleared", "work_order")


async def test_maintenance_is_told_like_every_device_status_change(db, seoul):
    lamp = await add_device(seoul, 1, 37.5, 127.0)
    order = await create_order(seoul.client, device_ids=[lamp["id"]])
    order = await patch_order(seoul.client, order, crew_id=(await add_crew(seoul, "North team"))["id"])
    order = await patch_order(seoul.client, order, status="in_progress")
    await patch_order(seoul.client, order, status="cancelled")
    async with db.system_tx() as conn:
        payloads = await conn.fetch("select payload from events where kind = 'device.status_changed' "
                                    "and subject_id = $1 order by id", lamp["id"])
    assert [p["payload"] for p in payloads] == [
        {"device_id": lamp["id"], "status": "maintenance", "previous": "provisioned", "work_order_id": order["id"]},
        {"device_id": lamp["id"], "status": "provisioned", "previous": "maintenance", "work_order_id": order["id"]}]


async def test_closing_gives_back_online_or_offline_as_the_device_is_registered_now(db, seoul):
    lamp = await add_device(seoul, 1, 37.5, 127.0)
    async with db.system_tx() as conn:
        await conn.execute("update devices set status = 'online' where id = $1", lamp["id"])
    order = await create_order(seoul.client, device_ids=[lamp["id"]])
    order = await patch_order(seoul.client, order, crew_id=(await add_crew(seoul, "North team"))["id"])
    order = await patch_order(seoul.client, order, status="in_progress")
    # It never registered again during the work (no registration row): offline, not online.
    await patch_order(seoul.client, order, status="done")
    assert (await seoul.client.get(f"/api/v1/devices/{lamp['id']}")).json()["status"] == "offline"
