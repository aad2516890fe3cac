"""A device's page in the browser: state, charts, alarms, work orders and commands, and
dim/read/override drawn only for the roles that may use them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from playwright.async_api import Page, expect

from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.service import AlarmService
from tests.fleet.collection.forecast_helpers import write_fills
from tests.web.conftest import screenshot, sign_in

LEVEL, POWER = "/3416/0/3", "/3418/0/4"
TIMEOUT = 15_000


async def streetlight(city, n: int = 1) -> dict:
    response = await city.client.post("/api/v1/devices", json={
        "kind": "streetlight", "endpoint": f"{city.slug}-light-{n}", "district": "Jung-gu",
        "location": {"lat": 37.5665, "lon": 126.978}, "nominal_wattage": 90, "pole_number": f"JG-{n:04d}"})
    assert response.status_code == 201, response.text
    return response.json()


async def write_night(db, city, device: dict) -> None:
    """A day of level and power every 10 minutes (off, full, dimmed to 60 % then 30 %), written as
    the telemetry pipeline stores them: telemetry rows, the latest in device_state."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = []
    for step in range(144):
        at = now - timedelta(minutes=10 * (143 - step))
        level = 0.0 if step < 60 else 100.0 if step < 96 else 60.0 if step < 120 else 30.0
        rows += [(city.tenant_id, uuid.UUID(device["id"]), at, LEVEL, level),
                 (city.tenant_id, uuid.UUID(device["id"]), at, POWER, round(90 * level / 100 + 1.5, 1))]
    async with db.system_tx() as conn:
        await conn.executemany(
            "insert into telemetry (tenant_id, device_id, time, path, v_num) values ($1, $2, $3, $4, $5)", rows)
        await conn.executemany(
            """insert into device_state (device_id, path, tenant_id, time, v_num) values ($1, $2, $3, $4, $5)
               on conflict (device_id, path) do update set time = excluded.time, v_num = excluded.v_num""",
            [(r[1], r[3], r[0], r[2], r[4]) for r in rows[-2:]])


async def raise_alarm(db, city, device: dict, alarm_type: AlarmType = AlarmType.LAMP_FAILURE) -> None:
    at = datetime.now(UTC) - timedelta(minutes=20)
    await AlarmService(db).apply([Finding(city.tenant_id, uuid.UUID(device["id"]), alarm_type, True, at)])


async def open_device(context, key: str, device: dict) -> Page:
    page = await sign_in(context, key, f"/#/devices/{device['id']}")
    await expect(page.get_by_test_id("device-title")).to_contain_text(device["endpoint"], timeout=TIMEOUT)
    return page


async def test_an_operator_sees_the_light_and_dims_it_for_half_an_hour(db, seoul, open_context):
    light = await streetlight(seoul)
    await write_night(db, seoul, light)
    await raise_alarm(db, seoul, light)
    order = await seoul.client.post("/api/v1/workorders", json={
        "type": "repair_lamp", "priority": "high", "device_ids": [light["id"]], "notes": "lamp out on JG-0001"})
    assert order.status_code == 201, order.text
    context = await open_context()
    console: list[str] = []
    context.on("page", lambda p: p.on("console", lambda m: console.append(m.text)))
    page = await open_device(context, seoul.key, light)
    await expect(page.get_by_test_id("device-commands")).to_contain_text("No commands sent to this device yet")
    await expect(page.get_by_test_id("device-commands")).not_to_contain_text("null")

    values = page.get_by_test_id("device-values")
    await expect(values).to_contain_text("Dimming level", timeout=TIMEOUT)
    await expect(values).to_contain_text("30 %")
    await expect(values).to_contain_text("Active power")
    # Both charts drawn by plotly.js, each with a trace, and a text alternative with the figures.
    for chart in ("chart-level", "chart-power"):
        figure = page.get_by_test_id(chart)
        await expect(figure.locator(".js-plotly-plot .scatterlayer .trace").first).to_be_attached(timeout=TIMEOUT)
    await expect(page.get_by_test_id("chart-level").locator("figcaption")).to_contain_text("min 0 %, max 100 %, latest 30 %")
    await expect(page.get_by_test_id("device-alarms")).to_contain_text("lamp failure")
    await expect(page.get_by_test_id("device-workorders")).to_contain_text("repair lamp")
    await screenshot(page, "device-page")
    # The page fits the wall screen and the forms their panel (the control room's `.control` grid
    # once spilled into the forms here and drew them wider than the screen).
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    form = await page.get_by_test_id("dim-form").bounding_box()
    panel = await page.get_by_test_id("dim-form").locator("xpath=ancestor::section[1]").bounding_box()
    assert form["x"] + form["width"] <= panel["x"] + panel["width"], (form, panel)
    # Alarms and work orders above the charts, whatever the length of the state's table.
    alarms = await page.get_by_test_id("device-alarms").bounding_box()
    series = await page.get_by_test_id("device-series").bounding_box()
    assert alarms["y"] < series["y"] and alarms["y"] < 900, (alarms, series)

    await page.get_by_label("Level (%)").fill("40")
    await page.get_by_label("For (minutes)").fill("30")
    await page.get_by_role("button", name="Dim", exact=True).click()
    await expect(page.get_by_test_id("device-overrides")).to_contain_text("40 %", timeout=TIMEOUT)
    overrides = (await seoul.client.get("/api/v1/lighting/overrides")).json()
    (made,) = [o for o in overrides if o["scope"].get("device_ids") == [light["id"]]]
    assert made["dimming_level"] == 40 and made["active"]
    lasting = datetime.fromisoformat(made["ends_at"]) - datetime.fromisoformat(made["starts_at"])
    assert lasting == timedelta(minutes=30)

    # An out-of-range level: the API's problem detail shows beside the form.
    await page.get_by_label("Level (%)").fill("140")
    await page.get_by_label("Level (%)").evaluate("input => input.form.noValidate = true")
    await page.get_by_role("button", name="Dim", exact=True).click()
    await expect(page.get_by_test_id("dim-error")).to_contain_text("invalid override", timeout=TIMEOUT)

    await page.get_by_role("button", name="Cancel override").click()
    await expect(page.get_by_test_id("device-overrides")).to_have_count(0, timeout=TIMEOUT)
    after = (await seoul.client.get(f"/api/v1/lighting/overrides/{made['id']}")).json()
    assert after["cancelled_at"] is not None and not after["active"]
    assert not [m for m in console if "Content Security Policy" in m], console


async def test_a_viewer_sees_the_light_but_no_controls(db, seoul, open_context):
    light = await streetlight(seoul)
    await write_night(db, seoul, light)
    await seoul.client.post("/api/v1/lighting/overrides", json={
        "scope": {"device_ids": [light["id"]]}, "dimming_level": 70, "duration_s": 3600})
    await seoul.client.post("/api/v1/commands", json={
        "target": {"device_ids": [light["id"]]}, "operation": "read", "path": "/3418/0/4"})
    viewer = (await seoul.client.post("/api/v1/apikeys", json={"role": "viewer", "name": "wall"})).json()["key"]
    page = await open_device(await open_context(), viewer, light)
    # A viewer reads the device's commands, not who else's key sent them.
    reading = page.get_by_test_id("device-command-list").locator("li", has_text="read /3418/0/4")
    await expect(reading).to_contain_text(f"by key:{str(seoul.principal.api_key_id)[:8]}", timeout=TIMEOUT)
    await expect(page.get_by_test_id("chart-level").locator(".js-plotly-plot")).to_be_attached(timeout=TIMEOUT)
    await expect(page.get_by_test_id("device-overrides")).to_contain_text("70 %")
    for control in ("Dim", "Read"):
        assert await page.get_by_role("button", name=control, exact=True).count() == 0
    assert await page.get_by_role("button", name="Cancel override").count() == 0
    assert await page.get_by_label("Level (%)").count() == 0
    assert await page.get_by_label("Resource path").count() == 0
    # Nothing to press on the page: the range of the charts is the only control left.
    assert await page.locator("main button").count() == 0

    # Live: an alarm raised and a work order opened on this light reach the open page.
    await raise_alarm(db, seoul, light, AlarmType.DAY_BURNER)
    await expect(page.get_by_test_id("device-alarms")).to_contain_text("day burner", timeout=TIMEOUT)
    order = await seoul.client.post("/api/v1/workorders", json={
        "type": "replace_controller", "priority": "low", "device_ids": [light["id"]]})
    assert order.status_code == 201, order.text
    await expect(page.get_by_test_id("device-workorders").locator(f"[data-work-order='{order.json()['id']}']")
                 ).to_be_attached(timeout=TIMEOUT)


async def test_a_read_of_an_unregistered_light_stays_queued_and_says_so(db, seoul, open_context):
    light = await streetlight(seoul)
    # Sent before the page opened (as any key or job would): the panel lists the device's commands.
    for n in range(21):
        response = await seoul.client.post("/api/v1/commands", json={
            "target": {"device_ids": [light["id"]]}, "operation": "read", "path": f"/3/0/{n % 4}"})
        assert response.status_code == 202, response.text
    page = await open_device(await open_context(), seoul.key, light)
    await expect(page.get_by_test_id("device-state")).to_contain_text("not registered")
    commands = page.get_by_test_id("device-command-list").locator("li")
    await expect(commands).to_have_count(20, timeout=TIMEOUT)
    await page.get_by_label("Resource path").fill("/3416/0/3")
    await page.get_by_role("button", name="Read", exact=True).click()
    item = commands.first
    await expect(item).to_contain_text("read /3416/0/3", timeout=TIMEOUT)
    await expect(item).to_have_attribute("data-status", "queued")
    await expect(item).to_contain_text("waiting for the device to register")
    await expect(item).to_contain_text("by you")
    command = (await seoul.client.get(f"/api/v1/commands/{await item.get_attribute('data-batch')}")).json()
    assert command["devices"][0]["status"] == "queued"
    listed = (await seoul.client.get(f"/api/v1/devices/{light['id']}/commands", params={"limit": "20"})).json()
    assert [c["id"] for c in listed["items"]] == await commands.evaluate_all("items => items.map(i => i.dataset.command)")
    # The older ones, 20 at a time: the button goes when there are no more.
    await expect(commands).to_have_count(20)
    await page.get_by_role("button", name="More commands").click()
    await expect(commands).to_have_count(22, timeout=TIMEOUT)
    assert await page.get_by_role("button", name="More commands").count() == 0
    await expect(commands.nth(20)).to_be_focused()
    # Finished elsewhere (cancelled over the API): `command.finished` updates the open list.
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=TIMEOUT)
    await seoul.client.post(f"/api/v1/commands/{command['id']}/cancel")
    await expect(item).to_have_attribute("data-status", "cancelled", timeout=TIMEOUT)
    await expect(item).to_contain_text("finished")
    await expect(commands).to_have_count(22)
    await page.get_by_test_id("device-commands").evaluate("panel => panel.scrollIntoView()")
    await screenshot(page, "device-page-commands")
    # Fleet keeps them: a reload shows the page's read, as the API lists it.
    await page.reload()
    await expect(commands.first).to_contain_text("read /3416/0/3", timeout=TIMEOUT)
    await expect(commands.first).to_have_attribute("data-status", "cancelled")
    # A malformed path: the API's detail shows beside the control.
    await page.get_by_label("Resource path").evaluate("input => input.form.noValidate = true")
    await page.get_by_label("Resource path").fill("/not-a-path")
    await page.get_by_role("button", name="Read", exact=True).click()
    await expect(page.get_by_test_id("read-error")).not_to_be_empty(timeout=TIMEOUT)


async def test_a_bin_shows_its_fill_and_offers_no_dimming(db, seoul, open_context):
    response = await seoul.client.post("/api/v1/devices", json={
        "kind": "waste_bin", "endpoint": "seoul-bin-1", "location": {"lat": 37.57, "lon": 126.98},
        "district": "Jongno", "waste_kind": "plastic", "capacity_litres": 240})
    assert response.status_code == 201, response.text
    bin_ = response.json()
    await write_fills(db, seoul.tenant_id, uuid.UUID(bin_["id"]), datetime.now(UTC) - timedelta(hours=12), 12,
                      lambda h: 10.0 + 5 * h)
    page = await open_device(await open_context(), seoul.key, bin_)
    fill = page.get_by_test_id("chart-fill")
    await expect(fill.locator(".js-plotly-plot .scatterlayer .trace").first).to_be_attached(timeout=TIMEOUT)
    await expect(fill.locator("figcaption")).to_contain_text("latest 65 %")
    # Half the day's range is empty: the caption says since when the bin reports.
    await expect(fill.locator("figcaption")).to_contain_text("reported since")
    assert await page.get_by_role("button", name="Dim", exact=True).count() == 0
    assert await page.get_by_role("button", name="Read", exact=True).count() == 1
