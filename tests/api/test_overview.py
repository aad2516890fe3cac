"""The city at a glance over real HTTP: figures equal the devices and alarms APIs, the map
switches from devices to clusters, severity colours, district outlines, walls and roles."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from fleet.access.models import Role
from fleet.lighting.night import night_of, night_window
from fleet.lighting.plan import load_schedule
from fleet.lighting.repository import LightingRepository
from fleet.overview.service import tonight_energy
from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.service import AlarmService
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.repository import DeviceRepository
from tests.fleet.collection.route_fixtures import seed_route

CITY = "126.9,37.5,127.1,37.7"


async def add(city, n: int, kind: str = "streetlight", district: str = "Jung-gu", lat: float = 37.55) -> dict:
    body = {"kind": kind, "endpoint": f"{city.slug}-{n}", "location": {"lat": lat + n * 0.001, "lon": 126.95},
            "district": district} | ({"nominal_wattage": 100} if kind == "streetlight" else {})
    response = await city.client.post("/api/v1/devices", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def alarm(db, city, device: dict, alarm_type: AlarmType) -> None:
    await AlarmService(db).apply([Finding(city.tenant_id, uuid.UUID(device["id"]), alarm_type, True,
                                          datetime.now(UTC))])


async def state(db, device: dict, path: str, value: float) -> None:
    async with db.system_tx() as conn:
        await conn.execute("insert into device_state (tenant_id, device_id, path, time, v_num)"
                           " select tenant_id, id, $2, now(), $3 from devices where id = $1",
                           uuid.UUID(device["id"]), path, value)


async def listed(city) -> list[dict]:
    items, cursor = [], None
    while True:
        page = (await city.client.get("/api/v1/devices", params={"limit": 2} | (
            {"cursor": cursor} if cursor else {}))).json()
        items += page["items"]
        if not (cursor := page["next_cursor"]):
            return items


async def test_figures_equal_the_devices_and_alarms_apis(db, seoul):
    lights = [await add(seoul, n) for n in range(3)]
    bins = [await add(seoul, 10 + n, "waste_bin", "Mapo-gu") for n in range(3)]
    ap = await add(seoul, 20, "wifi_ap")
    gone = await add(seoul, 30)
    assert (await seoul.client.delete(f"/api/v1/devices/{gone['id']}")).status_code == 200
    await alarm(db, seoul, lights[0], AlarmType.LAMP_FAILURE)
    await alarm(db, seoul, bins[0], AlarmType.BIN_FIRE)
    await alarm(db, seoul, ap, AlarmType.AP_DOWN)
    acknowledged = (await seoul.client.get("/api/v1/alarms", params={"type": "ap_down"})).json()["items"][0]
    response = await seoul.client.post(f"/api/v1/alarms/{acknowledged['id']}/acknowledge", json={"note": "on it"})
    assert response.status_code == 200, response.text
    await state(db, lights[0], "/3416/0/3", 70)
    await state(db, lights[0], "/3416/0/46", 62.5)
    await state(db, lights[1], "/3311/0/5851", 0)
    # A failed lamp still reports its level but draws nothing: dark, not lit.
    await state(db, lights[2], "/3416/0/3", 100)
    await state(db, lights[2], "/3416/0/46", 0)
    await state(db, lights[2], "/3418/0/4", 1.4)
    await state(db, bins[0], "/3435/0/2", 10)
    await state(db, bins[1], "/3435/0/2", 100)
    await seed_route(db, seoul.tenant_id, bins=2, day=datetime.now(ZoneInfo("Asia/Seoul")).date())

    response = await seoul.client.get("/api/v1/overview")
    assert response.status_code == 200, response.text
    figures = response.json()
    devices = await listed(seoul)
    assert figures["devices"]["total"] == len(devices)
    # The route fixture's bins are devices too; every figure must agree with the list.
    by_kind = {k: sum(d["kind"] == k for d in devices) for k in ("streetlight", "waste_bin", "wifi_ap")}
    assert {k: v["total"] for k, v in figures["devices"]["by_kind"].items()} == by_kind
    statuses = {d["status"] for d in devices}
    assert figures["devices"]["by_status"] == {s: sum(d["status"] == s for d in devices) for s in statuses}
    assert figures["devices"]["by_kind"]["streetlight"] == {"total": 3, "by_status": {"provisioned": 3}}

    counts = (await seoul.client.get("/api/v1/alarms/counts", params={"status": "active"})).json()
    assert figures["alarms"]["active"] == counts["total"] == 2
    assert figures["alarms"]["by_severity"] == counts["by_severity"]
    assert {(d["district"], d["total"]) for d in figures["alarms"]["by_district"]} == {("Jung-gu", 1), ("Mapo-gu", 1)}
    mapo = next(d for d in figures["alarms"]["by_district"] if d["district"] == "Mapo-gu")
    assert mapo["by_severity"] == {"critical": 1}

    assert figures["lighting"]["lights"] == 3 and figures["lighting"]["lit_now"] == 1
    tonight = figures["lighting"]["tonight"]
    assert set(tonight) == {"from", "to", "energy_kwh", "uncontrolled_kwh"}
    # The night's window as Seoul's clocks show it: noon to noon, +09:00 rather than Z.
    assert tonight["from"].endswith("T12:00:00+09:00") and tonight["to"].endswith("T12:00:00+09:00")
    # No calendar: every light burns dusk to dawn, controlled or not (3 x 100 W x ~14 h).
    assert tonight["energy_kwh"] == tonight["uncontrolled_kwh"] and 3 < tonight["uncontrolled_kwh"] < 5

    bins_figures = figures["bins"]
    assert bins_figures["total"] == by_kind["waste_bin"]
    assert [(b["from"], b["to"]) for b in bins_figures["by_fill"]] == [(0, 20), (20, 40), (40, 60), (60, 80), (80, 100)]
    fills = [b["count"] for b in bins_figures["by_fill"]]
    assert fills[0] >= 1 and fills[4] == 1 and sum(fills) + bins_figures["unknown"] == bins_figures["total"]
    assert bins_figures["unknown"] >= 1  # bins[2] never reported (not bucket 0)
    today = bins_figures["routes_today"]
    assert today["routes"] == 1 and today["completed"] == 0 and today["stops_total"] == 3, today
    assert figures["access_points"] == {"total": 1, "online": 0, "clients_now": None}
    assert figures["campaigns"] == []


SUN_PROGRAM = {"name": "sun", "switch_points": [
    {"anchor": "sunset", "offset_minutes": 10, "dimming_level": 80},
    {"anchor": "local_time", "local_time": "23:00", "dimming_level": 40},
    {"anchor": "sunrise", "dimming_level": 0}]}
EVENING_PROGRAM = {"name": "evening", "switch_points": [
    {"anchor": "local_time", "local_time": "18:00", "dimming_level": 100},
    {"anchor": "local_time", "local_time": "02:00", "dimming_level": 0}]}


async def test_tonight_summed_per_cell_equals_each_light_planned_alone(db, seoul):
    """The overview sums wattage per district, sun cell and group; the answer must equal the
    planner's over every light one by one, with groups, overrides and unscheduled lights."""
    lights = []
    for n in range(12):
        district = ("Jung-gu", "Mapo-gu", "Nowon-gu")[n % 3]  # Nowon-gu: no calendar
        body = {"kind": "streetlight", "endpoint": f"seoul-t{n}", "district": district,
                "location": {"lat": 37.5 + n * 0.0137, "lon": 126.9 + (n % 4) * 0.0213}}
        if n != 5:
            body["nominal_wattage"] = 60 + 10 * n
        response = await seoul.client.post("/api/v1/devices", json=body)
        assert response.status_code == 201, response.text
        lights.append(response.json())
    lighting = "/api/v1/lighting"
    sun = (await seoul.client.post(f"{lighting}/programs", json=SUN_PROGRAM)).json()
    evening = (await seoul.client.post(f"{lighting}/programs", json=EVENING_PROGRAM)).json()
    streets = (await seoul.client.post(f"{lighting}/calendars", json={
        "name": "streets", "default_program_id": sun["id"]})).json()
    roads = (await seoul.client.post(f"{lighting}/calendars", json={
        "name": "roads", "default_program_id": evening["id"]})).json()
    road = (await seoul.client.post("/api/v1/groups", json={
        "name": "road", "device_ids": [lights[0]["id"], lights[1]["id"], lights[2]["id"]]})).json()
    for scope in ({"district": "Jung-gu"}, {"district": "Mapo-gu"}, {"group_id": road["id"]}):
        calendar = roads if "group_id" in scope else streets
        response = await seoul.client.post(f"{lighting}/assignments", json={"calendar_id": calendar["id"], **scope})
        assert response.status_code == 201, response.text
    for scope in ({"device_ids": [lights[4]["id"], lights[8]["id"]]}, {"district": "Mapo-gu"}):
        response = await seoul.client.post(f"{lighting}/overrides", json={
            "scope": scope, "dimming_level": 30, "duration_s": 36 * 3600})
        assert response.status_code == 201, response.text

    tonight = (await seoul.client.get("/api/v1/overview")).json()["lighting"]["tonight"]
    zone = ZoneInfo("Asia/Seoul")
    start, end = night_window(night_of(datetime.now(UTC), zone), zone)
    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        schedule = await load_schedule(conn, seoul.tenant_id, "Asia/Seoul", start - timedelta(days=1), end)
        one_by_one = tonight_energy(schedule, await LightingRepository(conn).lights(seoul.tenant_id), start, end)
    assert tonight["energy_kwh"] == one_by_one.energy_kwh
    assert tonight["uncontrolled_kwh"] == one_by_one.uncontrolled_kwh
    assert 0 < tonight["energy_kwh"] < tonight["uncontrolled_kwh"]


async def test_map_switches_from_devices_to_clusters_and_colours_by_severity(db, seoul):
    light = await add(seoul, 0)
    await add(seoul, 1, "waste_bin")
    await alarm(db, seoul, light, AlarmType.LAMP_FAILURE)
    view = (await seoul.client.get("/api/v1/map", params={"bbox": CITY, "zoom": "12"})).json()
    assert view["clusters"] == [] and len(view["devices"]) == 2
    shown = {d["id"]: d for d in view["devices"]}
    assert shown[light["id"]] == {"id": light["id"], "name": light["endpoint"], "kind": "streetlight",
                                  "status": "provisioned", "lat": light["location"]["lat"], "lon": 126.95,
                                  "district": "Jung-gu", "worst_severity": "major"}
    assert {d["worst_severity"] for d in view["devices"]} == {"major", None}

    async with db.tenant_tx(seoul.tenant_id) as conn:
        await DeviceRepository(conn).insert_many(seoul.tenant_id, [
            NewDevice(DeviceKind.WASTE_BIN, f"seoul-many-{n}", 37.6 + (n % 20) * 0.002, 127.0 + (n // 20) * 0.002)
            for n in range(420)])
    view = (await seoul.client.get("/api/v1/map", params={"bbox": CITY, "zoom": "12"})).json()
    assert view["devices"] == [] and sum(c["count"] for c in view["clusters"]) == 422
    red = [c for c in view["clusters"] if c["worst_severity"] is not None]
    assert len(red) == 1 and red[0]["worst_severity"] == "major"
    for cluster in view["clusters"]:
        w, s, e, n = cluster["bbox"]
        assert w <= cluster["lon"] <= e and s <= cluster["lat"] <= n
        assert sum(cluster["by_status"].values()) == cluster["count"]
    # Closer in, the same view is shown device by device again.
    close = (await seoul.client.get("/api/v1/map", params={"bbox": "126.949,37.549,126.951,37.5505",
                                                           "zoom": "18"})).json()
    assert close["clusters"] == [] and {d["id"] for d in close["devices"]} == {light["id"]}

    for params, field in (({"zoom": "12"}, "bbox"), ({"bbox": "1,2,3", "zoom": "12"}, "bbox"),
                          ({"bbox": CITY, "zoom": "x"}, "zoom"), ({"bbox": CITY, "zoom": "40"}, "zoom")):
        response = await seoul.client.get("/api/v1/map", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_district_outlines(seoul):
    for n in range(4):
        await add(seoul, n, district="Jung-gu")
    await add(seoul, 10, district="Mapo-gu", lat=37.56)
    outlines = (await seoul.client.get("/api/v1/map/districts")).json()
    assert outlines["type"] == "FeatureCollection"
    features = {f["properties"]["district"]: f for f in outlines["features"]}
    assert features["Jung-gu"]["properties"]["devices"] == 4 and features["Mapo-gu"]["properties"]["devices"] == 1
    for feature in features.values():
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        lons, lats = [p[0] for p in ring], [p[1] for p in ring]
        props = feature["properties"]
        assert min(lons) < props["label_lon"] < max(lons) and min(lats) < props["label_lat"] < max(lats)


async def test_walls_and_roles(db, seoul, busan, city_factory):
    await add(seoul, 0)
    await alarm(db, seoul, await add(seoul, 1), AlarmType.LAMP_FAILURE)
    figures = (await busan.client.get("/api/v1/overview")).json()
    assert figures["devices"]["total"] == 0 and figures["alarms"]["active"] == 0
    assert figures["lighting"]["lights"] == 0
    view = (await busan.client.get("/api/v1/map", params={"bbox": CITY, "zoom": "12"})).json()
    assert view == {"clusters": [], "devices": []}
    assert (await busan.client.get("/api/v1/map/districts")).json()["features"] == []

    for role in (Role.VIEWER, Role.CREW, Role.OPERATOR):
        reader = (await seoul.client.post("/api/v1/apikeys", json={"role": role.value})).json()["key"]
        headers = {"Authorization": f"Bearer {reader}"}
        for url in ("/api/v1/overview", "/api/v1/map?bbox=" + CITY + "&zoom=12", "/api/v1/map/districts"):
            response = await seoul.client.get(url, headers=headers)
            assert response.status_code == 200, (role, url, response.text)
        assert (await seoul.client.get("/api/v1/overview", headers=headers)).json()["devices"]["total"] == 2
    reporter = (await seoul.client.post("/api/v1/apikeys", json={"role": "reporter"})).json()["key"]
    for url in ("/api/v1/overview", "/api/v1/map?bbox=" + CITY + "&zoom=12", "/api/v1/map/districts"):
        response = await seoul.client.get(url, headers={"Authorization": f"Bearer {reporter}"})
        assert response.status_code == 403, url
