"""Alarms over real HTTP: filters, cursor pages, counts, acknowledge/shelve/clear, settings for the
city and for groups (applied without a restart), the wall between cities, audit and events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fleet.access.models import Role
from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.service import AlarmService
from fleet.events.models import START
from fleet.events.repository import EventRepository

ALARMS = "/api/v1/alarms"
CONTRACT = {"id", "type", "severity", "status", "device_id", "count", "first_seen", "last_seen"}


def device_body(city, n: int, kind: str = "streetlight", district: str = "Jung-gu") -> dict:
    body = {"kind": kind, "endpoint": f"{city.slug}-{n}", "location": {"lat": 37.55 + n * 0.001, "lon": 126.95},
            "district": district}
    return body | ({"nominal_wattage": 90} if kind == "streetlight" else {})


async def add_device(city, n: int, **fields) -> dict:
    response = await city.client.post("/api/v1/devices", json=device_body(city, n, **fields))
    assert response.status_code == 201, response.text
    return response.json()


async def raise_alarm(db, city, device: dict, alarm_type=AlarmType.LAMP_FAILURE, present=True, minutes=0):
    at = datetime.now(UTC) - timedelta(hours=1) + timedelta(minutes=minutes)
    await AlarmService(db).apply([Finding(city.tenant_id, uuid.UUID(device["id"]), alarm_type, present, at)])


async def all_pages(city, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        response = await city.client.get(ALARMS, params=params | ({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def fields_of(response) -> set[str]:
    return {e["field"] for e in response.json().get("errors", [])}


async def test_list_filters_pages_and_counts(db, seoul):
    lights = [await add_device(seoul, n) for n in range(5)]
    bin_ = await add_device(seoul, 9, kind="waste_bin", district="Mapo-gu")
    for light in lights:
        await raise_alarm(db, seoul, light)
    await raise_alarm(db, seoul, lights[0], AlarmType.DAY_BURNER)
    await raise_alarm(db, seoul, bin_, AlarmType.BIN_FIRE)

    items = await all_pages(seoul, limit=2)
    assert len(items) == 7 and len({a["id"] for a in items}) == 7
    assert CONTRACT <= set(items[0]) and items[0]["type"] == "bin_fire"  # newest first
    assert {"kind", "district", "lat", "lon", "shelved_until", "value", "detail", "version",
            "acknowledged_at", "acknowledged_by", "cleared_at", "cleared_by"} <= set(items[0])

    assert [a["type"] for a in await all_pages(seoul, severity="critical")] == ["bin_fire"]
    assert len(await all_pages(seoul, type="lamp_failure")) == 5
    assert [a["device_id"] for a in await all_pages(seoul, kind="waste_bin")] == [bin_["id"]]
    assert [a["device_id"] for a in await all_pages(seoul, district="Mapo-gu")] == [bin_["id"]]
    assert len(await all_pages(seoul, device=lights[0]["id"])) == 2
    assert len(await all_pages(seoul, bbox="126.9,37.5495,127.0,37.5515")) == 3  # lights 0 and 1
    near = await all_pages(seoul, near="37.553,126.95", radius_m="250", limit=1)
    assert [a["device_id"] for a in near][:2] == [lights[3]["id"], lights[2]["id"]] or \
        [a["device_id"] for a in near][:2] == [lights[3]["id"], lights[4]["id"]]
    assert near[0]["distance_m"] == 0 and all(isinstance(a["distance_m"], int) for a in near)
    assert [a["distance_m"] for a in near] == sorted(a["distance_m"] for a in near)

    group = (await seoul.client.post("/api/v1/groups", json={"name": "two", "device_ids": [
        lights[1]["id"], lights[2]["id"]]})).json()
    assert len(await all_pages(seoul, group=group["id"])) == 2
    bins = (await seoul.client.post("/api/v1/groups", json={"name": "bins", "filter": {"kind": "waste_bin"}})).json()
    assert [a["type"] for a in await all_pages(seoul, group=bins["id"])] == ["bin_fire"]
    assert (await seoul.client.get(f"{ALARMS}/counts", params={"group": bins["id"]})).json()["total"] == 1

    counts = (await seoul.client.get(f"{ALARMS}/counts")).json()
    assert counts == {"total": 7, "by_severity": {"major": 5, "minor": 1, "critical": 1},
                      "by_district": {"Jung-gu": 6, "Mapo-gu": 1},
                      "by_type": {"lamp_failure": 5, "day_burner": 1, "bin_fire": 1}}
    counts = (await seoul.client.get(f"{ALARMS}/counts", params={"kind": "streetlight"})).json()
    assert counts["total"] == 6

    bad = await seoul.client.get(ALARMS, params={"status": "gone", "severity": "huge", "type": "x",
                                                 "bbox": "1,2", "device": "nope"})
    assert bad.status_code == 422 and fields_of(bad) == {"status", "severity", "type", "bbox", "device"}
    bad = await seoul.client.get(ALARMS, params={"cursor": "garbage"})
    assert bad.status_code == 422 and fields_of(bad) == {"cursor"}
    missing = await seoul.client.get(ALARMS, params={"group": str(uuid.uuid4())})
    assert missing.status_code == 404


async def test_acknowledge_shelve_clear_with_audit_and_events(db, seoul):
    light = await add_device(seoul, 1)
    await raise_alarm(db, seoul, light)
    [alarm] = (await seoul.client.get(ALARMS)).json()["items"]
    url = f"{ALARMS}/{alarm['id']}"

    acked = await seoul.client.post(f"{url}/acknowledge", json={"note": "crew informed"})
    assert acked.status_code == 200, acked.text
    body = acked.json()
    assert (body["status"], body["acknowledge_note"], body["version"]) == ("acknowledged", "crew informed", 2)
    assert body["acknowledged_by"] and body["acknowledged_at"]

    shelved = await seoul.client.post(f"{url}/shelve", json={"minutes": 60, "reason": "roadworks"})
    assert shelved.status_code == 200 and shelved.json()["shelved_until"]
    assert [a["id"] for a in await all_pages(seoul, shelved="true")] == [alarm["id"]]
    assert await all_pages(seoul, shelved="false") == []
    both = await seoul.client.post(f"{url}/shelve", json={"minutes": 5, "until": "2099-01-01T00:00:00Z"})
    assert both.status_code == 422
    past = await seoul.client.post(f"{url}/shelve", json={"until": "2001-01-01T00:00:00Z"})
    assert past.status_code == 422 and fields_of(past) == {"until"}
    assert (await seoul.client.post(f"{url}/shelve", json={"minutes": 5, "why": "?"})).status_code == 400

    cleared = await seoul.client.post(f"{url}/clear", json={"note": "replaced by hand"})
    assert cleared.status_code == 200
    assert (cleared.json()["status"], cleared.json()["clear_reason"]) == ("cleared", "manual")
    assert (await seoul.client.post(f"{url}/acknowledge", json={})).status_code == 409
    assert (await seoul.client.post(f"{url}/clear", json={})).status_code == 409
    assert (await seoul.client.get(ALARMS)).json()["items"] == []
    history = await all_pages(seoul, status="cleared")
    assert [a["id"] for a in history] == [alarm["id"]]
    assert len(await all_pages(seoul, status="all")) == 1

    device_shelf = await seoul.client.post(f"{ALARMS}/shelves", json={"device_id": light["id"], "minutes": 30})
    assert device_shelf.status_code == 201 and device_shelf.json()["device_id"] == light["id"]
    await raise_alarm(db, seoul, light)
    [again] = (await seoul.client.get(ALARMS)).json()["items"]
    assert again["shelved_until"] is not None
    unknown = await seoul.client.post(f"{ALARMS}/shelves", json={"device_id": str(uuid.uuid4()), "minutes": 3})
    assert unknown.status_code == 404

    audit = (await seoul.client.get("/api/v1/audit", params={"entity_type": "alarm",
                                                              "entity_id": alarm["id"]})).json()["items"]
    assert sorted(e["action"] for e in audit) == ["alarm.acknowledge", "alarm.clear", "alarm.shelve"]
    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        events = await EventRepository(conn).after(seoul.tenant_id, START, 100)
    assert [e.kind for e in events if e.subject_id == alarm["id"]] == [
        "alarm.raised", "alarm.updated", "alarm.updated", "alarm.cleared"]
    assert events[-1].payload["id"] == again["id"]


async def test_settings_for_city_and_group_apply_without_restart(db, seoul):
    a, b = await add_device(seoul, 1), await add_device(seoul, 2)
    view = (await seoul.client.get(f"{ALARMS}/settings")).json()
    assert view["overrides"] == {} and view["effective"] == view["defaults"]
    assert view["defaults"]["clear_after_minutes"] == 10

    put = await seoul.client.put(f"{ALARMS}/settings", json={"severities": {"lamp_failure": "critical"},
                                                              "overflow_fill_percent": 80})
    assert put.status_code == 200, put.text
    assert put.json()["effective"]["overflow_fill_percent"] == 80
    for bad, field in (({"nope": 1}, "nope"), ({"severities": {"not_a_type": "major"}}, "severities.not_a_type"),
                       ({"severities": {"lamp_failure": "huge"}}, "severities.lamp_failure"),
                       ({"clear_after_minutes": -1}, "clear_after_minutes")):
        response = await seoul.client.put(f"{ALARMS}/settings", json=bad)
        assert response.status_code == 422 and fields_of(response) == {field}, response.text

    group = (await seoul.client.post("/api/v1/groups", json={"name": "quiet", "device_ids": [b["id"]]})).json()
    url = f"/api/v1/groups/{group['id']}/alarm-settings"
    assert (await seoul.client.put(url, json={"severities": {"lamp_failure": "warning"}})).status_code == 200
    got = (await seoul.client.get(url)).json()
    assert got["effective"]["severities"]["lamp_failure"] == "warning"
    assert got["effective"]["overflow_fill_percent"] == 80 and got["city_overrides"]["overflow_fill_percent"] == 80

    await raise_alarm(db, seoul, a)
    await raise_alarm(db, seoul, b)
    by_device = {x["device_id"]: x["severity"] for x in (await seoul.client.get(ALARMS)).json()["items"]}
    assert by_device == {a["id"]: "critical", b["id"]: "warning"}

    assert (await seoul.client.delete(url)).status_code == 204
    assert (await seoul.client.delete(url)).status_code == 404
    assert (await seoul.client.get(url)).json()["overrides"] == {}
    dynamic = (await seoul.client.post("/api/v1/groups", json={"name": "dyn", "filter": {"kind": "streetlight"}})).json()
    assert (await seoul.client.put(f"/api/v1/groups/{dynamic['id']}/alarm-settings", json={})).status_code == 409

    audit = (await seoul.client.get("/api/v1/audit", params={"entity_type": "alarm_settings"})).json()["items"]
    assert [e["action"] for e in audit] == ["alarm_settings.update"]


async def test_roles_and_the_wall_between_cities(db, seoul, busan, city_factory):
    theirs = await add_device(busan, 1)
    await raise_alarm(db, busan, theirs)
    [their_alarm] = (await busan.client.get(ALARMS)).json()["items"]
    for method, suffix, body in (("GET", "", None), ("POST", "/acknowledge", {}), ("POST", "/clear", {}),
                                 ("POST", "/shelve", {"minutes": 5})):
        response = await seoul.client.request(method, f"{ALARMS}/{their_alarm['id']}{suffix}", json=body)
        assert response.status_code == 404, (suffix, response.text)
    assert (await seoul.client.get(ALARMS)).json()["items"] == []
    assert (await seoul.client.get(f"{ALARMS}/counts")).json()["total"] == 0
    shelf = await seoul.client.post(f"{ALARMS}/shelves", json={"device_id": theirs["id"], "minutes": 5})
    assert shelf.status_code == 404
    assert (await busan.client.get(f"{ALARMS}/{their_alarm['id']}")).json()["status"] == "active"

    viewer = await city_factory("busan-viewers", Role.VIEWER)
    assert (await viewer.client.get(ALARMS)).status_code == 200
    assert (await viewer.client.put(f"{ALARMS}/settings", json={})).status_code == 403
    crew = await city_factory("busan-crew", Role.CREW)
    assert (await crew.client.put(f"{ALARMS}/settings", json={})).status_code == 403
    operator = await city_factory("operators", Role.OPERATOR)
    assert (await operator.client.put(f"{ALARMS}/settings", json={"clear_after_minutes": 3})).status_code == 200
