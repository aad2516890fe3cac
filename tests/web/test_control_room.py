"""The control room in a real Chromium on the wall's screen: its figures equal the REST API's, a
lamp failing on the street (real CoAP over UDP) shows on the map and in the counts through the
event stream, and a viewer sees nothing it could press."""

from __future__ import annotations

import json
import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.async_api import Page, expect

from api.runtime import alarm_service
from fleet.alarms.evaluator import RuleEvaluator
from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.service import AlarmService
from protocols.lwm2m.listener import open_listener
from tests.api.test_overview import listed
from tests.fleet.collection.route_fixtures import seed_route
from tests.test_crews_day import Streetlight, eventually
from tests.web.conftest import screenshot, sign_in

# Figures wait this long at most; the target for the fault is 2 s, measured and printed.
WAIT_MS = 10_000
# Five districts of Seoul, roughly where they are: (name, lat, lon, radius in degrees).
DISTRICTS = [("Jongno-gu", 37.5860, 126.9800, 0.020), ("Jung-gu", 37.5610, 126.9960, 0.014),
             ("Mapo-gu", 37.5560, 126.9080, 0.020), ("Yongsan-gu", 37.5300, 126.9800, 0.018),
             ("Seongdong-gu", 37.5550, 127.0400, 0.016)]


async def add(client, endpoint: str, kind: str, district: str, lat: float, lon: float) -> dict:
    body = {"endpoint": endpoint, "kind": kind, "location": {"lat": lat, "lon": lon}, "district": district}
    answer = await client.post("/api/v1/devices", json=body | ({"nominal_wattage": 120} if kind == "streetlight" else {}))
    assert answer.status_code == 201, answer.text
    return answer.json()


async def figure(page: Page, testid: str) -> int:
    text = await page.get_by_test_id(testid).inner_text()
    return int(text.replace(",", "").replace("\u202f", "").replace("\u00a0", ""))


async def showing(page: Page, testid: str, value: int) -> None:
    await expect(page.get_by_test_id(testid)).to_have_text(f"{value:,}", timeout=WAIT_MS)


async def test_the_counts_on_the_wall_equal_the_apis(open_context, db, seoul):
    client = seoul.client
    lights = [await add(client, f"light-{n}", "streetlight", "Jung-gu", 37.56 + n * 0.001, 126.99) for n in range(4)]
    bins = [await add(client, f"bin-{n}", "waste_bin", "Mapo-gu", 37.55 + n * 0.001, 126.91) for n in range(3)]
    await add(client, "ap-1", "wifi_ap", "Jung-gu", 37.565, 126.995)
    gone = await add(client, "light-gone", "streetlight", "Jung-gu", 37.57, 126.99)
    assert (await client.delete(f"/api/v1/devices/{gone['id']}")).status_code == 200
    assert (await client.patch(f"/api/v1/devices/{bins[2]['id']}", json={"status": "maintenance"})).status_code == 200
    await AlarmService(db).apply([Finding(seoul.tenant_id, uuid.UUID(lights[0]["id"]), AlarmType.LAMP_FAILURE, True,
                                          datetime.now(UTC)),
                                  Finding(seoul.tenant_id, uuid.UUID(bins[0]["id"]), AlarmType.BIN_FIRE, True,
                                          datetime.now(UTC))])

    page = await sign_in(await open_context(), seoul.key)
    devices = await listed(seoul)
    active = (await client.get("/api/v1/alarms/counts", params={"status": "active"})).json()
    await showing(page, "count-devices", len(devices))
    assert len(devices) == 8  # the decommissioned light is left out
    await showing(page, "count-alarms-active", active["total"])
    assert active["total"] == 2
    for kind in ("streetlight", "waste_bin", "wifi_ap"):
        assert await figure(page, f"count-kind-{kind}") == sum(d["kind"] == kind for d in devices)
    for status in ("provisioned", "maintenance", "online", "offline"):
        assert await figure(page, f"count-status-{status}") == sum(d["status"] == status for d in devices)
    for severity in ("critical", "major", "minor", "warning"):
        assert await figure(page, f"alarms-severity-{severity}") == active["by_severity"].get(severity, 0)
    # Few devices in view: each is its own marker, its worst alarm on it.
    markers = page.locator("[data-testid='map-device']")
    await expect(markers).to_have_count(8, timeout=WAIT_MS)
    await expect(page.locator(f"[data-device-id='{bins[0]['id']}']")).to_have_attribute("data-severity", "critical")
    await expect(page.locator(f"[data-device-id='{lights[1]['id']}']")).not_to_have_attribute("data-severity", "critical")
    # From the keyboard: the map, then its markers.
    await page.get_by_test_id("control-map").focus()
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.dataset.testid") == "map-device"
    # A device's marker opens a popup linking to its page, from the keyboard.
    await page.locator(f"[data-device-id='{lights[0]['id']}']").focus()
    await page.keyboard.press("Enter")
    link = page.get_by_test_id("popup-device-link")
    await expect(link).to_have_attribute("href", f"#/devices/{lights[0]['id']}")
    await expect(link).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(link).to_have_count(0)
    await expect(page.locator(f"[data-device-id='{lights[0]['id']}']")).to_be_focused()


async def test_a_lamp_failing_in_the_street_shows_on_the_map_within_two_seconds(open_context, db, seoul):
    alarms = alarm_service(db)
    rules = RuleEvaluator(db, alarms.apply, settings=alarms.effective_settings)
    device = await add(seoul.client, "jung-gu-lamp-7", "streetlight", "Jung-gu", 37.5665, 126.9780)
    await add(seoul.client, "jung-gu-lamp-8", "streetlight", "Jung-gu", 37.5670, 126.9790)
    light = Streetlight("jung-gu-lamp-7")
    async with open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0), alarm_service=alarms,
                             rules=rules) as listener:
        await light.start()
        try:
            assert (await light.register(listener.port)).code.is_successful()
            page = await sign_in(await open_context(), seoul.key)
            marker = page.locator(f"[data-device-id='{device['id']}']")
            await expect(marker).to_have_attribute("data-status", "online", timeout=WAIT_MS)
            await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
            await showing(page, "count-alarms-active", 0)
            assert await marker.get_attribute("data-severity") is None

            await light.report(listener.port, lamp_failure=True)
            await expect(marker).to_have_attribute("data-severity", "major", timeout=WAIT_MS)
            on_screen = datetime.now(UTC)
            await showing(page, "count-alarms-active", 1)
            raised = await eventually(lambda: lamp_alarm(seoul.client, device["id"]), "the alarm over REST")
            delay = (on_screen - datetime.fromisoformat(raised["first_seen"])).total_seconds()
            # The target is 2 s; measured here, on a shared machine, not asserted.
            print(f"\nlamp failure raised at {raised['first_seen']}, on the wall's map {delay:.2f} s later (target 2 s)")
        finally:
            await light.stop()


async def lamp_alarm(client, device_id: str) -> dict | None:
    items = (await client.get("/api/v1/alarms", params={"device": device_id, "status": "active"})).json()["items"]
    return items[0] if items else None


async def test_a_viewer_sees_no_write_controls(open_context, seoul):
    await add(seoul.client, "light-v", "streetlight", "Jung-gu", 37.56, 126.99)
    answer = await seoul.client.post("/api/v1/apikeys", json={"role": "viewer", "name": "wall screen"})
    assert answer.status_code == 201, answer.text
    page = await sign_in(await open_context(), answer.json()["key"])
    await showing(page, "count-devices", 1)
    await expect(page.locator("[data-testid='map-device']")).to_have_count(1, timeout=WAIT_MS)
    controls = page.locator("button, [role='button'], a[href]:not([href^='#']), input:not([type='hidden']), select, textarea")
    names = []
    for i in range(await controls.count()):
        control = controls.nth(i)
        if await control.evaluate("e => e.classList.contains('leaflet-marker-icon')"):
            continue  # a marker opens its popup or zooms to its group: it changes nothing
        names.append(((await control.get_attribute("aria-label")) or (await control.inner_text())).strip())
    assert sorted(names) == ["Sign out", "Zoom in", "Zoom out"], names
    await screenshot(page, "control-room-viewer")


async def seed_city(db, city, per_district: int = 140) -> list[dict]:
    """A few hundred devices over five districts (imported as GeoJSON, as a city would), most of
    them online, some alarms, bins at every fill, lights lit, a route under way."""
    rng = random.Random(15)
    features = []
    for district, lat, lon, radius in DISTRICTS:
        for n in range(per_district):
            kind = rng.choices(["streetlight", "waste_bin", "wifi_ap"], [6, 3, 1])[0]
            angle, r = rng.uniform(0, 2 * math.pi), radius * math.sqrt(rng.random())
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [
                round(lon + 1.25 * r * math.cos(angle), 6), round(lat + r * math.sin(angle), 6)]},
                "properties": {"endpoint": f"{district.lower()}-{kind}-{n}", "kind": kind, "district": district}
                | ({"nominal_wattage": 120} if kind == "streetlight" else {})})
    answer = await city.client.post("/api/v1/devices/import", content=json.dumps(
        {"type": "FeatureCollection", "features": features}), headers={"Content-Type": "application/geo+json"})
    assert answer.status_code in (200, 201), answer.text
    async with db.system_tx() as conn:
        # The network's word on each device (seeded here: these devices never really registered).
        rows = await conn.fetch("select id, kind from devices where tenant_id = $1 order by endpoint", city.tenant_id)
        statuses = rng.choices(["online", "offline", "maintenance", "provisioned"], [85, 8, 4, 3], k=len(rows))
        await conn.execute("update devices d set status = s.status from unnest($1::uuid[], $2::text[]) s(id, status)"
                           " where d.id = s.id", [r["id"] for r in rows], statuses)
        for r in rows:
            if r["kind"] == "waste_bin":
                await conn.execute("insert into device_state (tenant_id, device_id, path, time, v_num)"
                                   " values ($1, $2, '/3435/0/2', now(), $3)", city.tenant_id, r["id"],
                                   min(100, rng.betavariate(2, 3) * 110))
            elif r["kind"] == "streetlight" and rng.random() < 0.9:
                await conn.execute("insert into device_state (tenant_id, device_id, path, time, v_num)"
                                   " values ($1, $2, '/3416/0/3', now(), $3)", city.tenant_id, r["id"],
                                   rng.choice([50, 70, 100]))
    kinds = {"streetlight": [AlarmType.LAMP_FAILURE, AlarmType.DAY_BURNER, AlarmType.POWER_ANOMALY],
             "waste_bin": [AlarmType.BIN_OVERFLOW, AlarmType.BIN_FIRE, AlarmType.LOW_BATTERY],
             "wifi_ap": [AlarmType.AP_DOWN, AlarmType.AP_OVERLOADED]}
    now = datetime.now(UTC)
    await AlarmService(db).apply([Finding(city.tenant_id, r["id"], rng.choice(kinds[r["kind"]]), True, now)
                                  for r in rng.sample(rows, 30)])
    await seed_route(db, city.tenant_id, bins=4, day=datetime.now(ZoneInfo("Asia/Seoul")).date())
    # Seoul's nights: full at sunset, dimmed late, off at sunrise; every district follows it.
    program = (await city.client.post("/api/v1/lighting/programs", json={"name": "standard night", "switch_points": [
        {"anchor": "sunset", "dimming_level": 100},
        {"anchor": "local_time", "local_time": "23:00", "dimming_level": 60},
        {"anchor": "local_time", "local_time": "01:00", "dimming_level": 40},
        {"anchor": "sunrise", "dimming_level": 0}]})).json()
    calendar = (await city.client.post("/api/v1/lighting/calendars", json={
        "name": "Seoul", "default_program_id": program["id"]})).json()
    for district, *_ in DISTRICTS:
        answer = await city.client.post("/api/v1/lighting/assignments", json={"calendar_id": calendar["id"],
                                                                            "district": district})
        assert answer.status_code == 201, answer.text
    return features


async def test_a_city_of_a_few_hundred_devices_on_the_wall(open_context, db, seoul):
    """The README's and docs/web.md's picture: the districts' outlines, clusters when zoomed out; one cluster
    zooms in to its devices."""
    features = await seed_city(db, seoul)
    page = await sign_in(await open_context(), seoul.key)
    await showing(page, "count-devices", len(features) + 4)  # and the route's bins
    clusters = page.locator("[data-testid='map-cluster']")
    await expect(clusters.first).to_be_visible(timeout=WAIT_MS)
    shown = await clusters.count()
    assert 1 < shown <= 400, shown
    await expect(page.locator(".district-label")).to_have_count(len(DISTRICTS))
    await screenshot(page, "control-room")
    # Selecting a cluster (keyboard) zooms to it: fewer devices in view, or the devices themselves.
    biggest = max([int(await clusters.nth(i).get_attribute("data-count")) for i in range(shown)])
    await page.locator(f"[data-testid='map-cluster'][data-count='{biggest}']").first.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("[data-testid='map-device']").first).to_be_visible(timeout=WAIT_MS)
