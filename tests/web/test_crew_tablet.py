"""The crews' tablet view in a real Chromium at tablet size, with the tablet's location: work
orders nearest first, closing one, working through a loss of network, photos, the route."""

from __future__ import annotations

import os
import struct
import zlib
from datetime import datetime
from uuid import UUID
from zoneinfo import ZoneInfo

from playwright.async_api import expect

from fleet.access.models import Role
from fleet.access.service import ApiKeyService
from tests.api.workorder_helpers import WORKORDERS, add_crew, add_device, create_order, patch_order
from tests.fleet.collection.route_fixtures import seed_route
from tests.web.conftest import TABLET, screenshot, sign_in

# The tablet stands at Seoul City Hall; the work orders are east of it at different distances.
HERE = {"latitude": 37.5665, "longitude": 126.9780}
WAIT = 15_000


def png(size: int = 48, noise: bool = False) -> bytes:
    """A real PNG (a blue square, or noise that does not compress), so the thumbnail has
    something to show."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + (os.urandom(3 * size) if noise else b"\x1f\x5f\xbf" * size) for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


async def crew_with_orders(db, seoul, offsets=(0.02, 0.005, 0.01)):
    """A crew, its key, and one work order per offset (degrees of longitude east of HERE), each
    on its own street light; the orders in creation order."""
    crew = await add_crew(seoul, "North team")
    issued = await ApiKeyService(db).issue(seoul.principal, Role.CREW, "tablet", UUID(crew["id"]))
    orders = []
    for n, offset in enumerate(offsets):
        device = await add_device(seoul, n, HERE["latitude"], HERE["longitude"] + offset)
        orders.append(await create_order(seoul.client, device_ids=[device["id"]], crew_id=crew["id"],
                                         priority=["high", "medium", "urgent", "low"][n % 4]))
    return crew, issued.secret, orders


async def tablet(open_context, key: str, path: str):
    context = await open_context(viewport=TABLET, geolocation=HERE, permissions=["geolocation"],
                                 has_touch=True, is_mobile=True)
    return context, await sign_in(context, key, path)


async def one_order_open(db, seoul, open_context):
    """A crew's tablet on the page of its one work order (assigned), loaded."""
    _, key, orders = await crew_with_orders(db, seoul, offsets=(0.005,))
    context, page = await tablet(open_context, key, f"/#/crew/work-orders/{orders[0]['id']}")
    await expect(page.get_by_test_id("order-status")).to_have_text("Assigned", timeout=WAIT)
    return context, page, orders[0]


async def test_my_work_orders_are_nearest_first_from_the_tablets_position(db, seoul, open_context):
    crew, key, orders = await crew_with_orders(db, seoul)
    _, page = await tablet(open_context, key, "/#/crew")
    items = page.get_by_test_id("crew-order")
    await expect(items).to_have_count(3, timeout=WAIT)
    await expect(page.get_by_test_id("crew-sort")).to_have_attribute("data-sort", "distance", timeout=WAIT)
    nearest_first = [orders[1]["id"], orders[2]["id"], orders[0]["id"]]
    assert [await item.get_attribute("data-id") for item in await items.all()] == nearest_first
    distances = await page.get_by_test_id("order-distance").all_inner_texts()
    assert distances[0].endswith(" m") and distances[2].endswith(" km"), distances
    assert "seoul-streetlight-1" in await items.first.inner_text()
    # The tablet told Fleet where it is.
    crew_now = (await seoul.client.get(f"/api/v1/crews/{crew['id']}")).json()
    assert abs(crew_now["position"]["lat"] - HERE["latitude"]) < 1e-6
    await screenshot(page, "crew-work-orders")


async def test_without_a_location_the_list_says_it_is_not_by_distance(db, seoul, open_context):
    crew, key, orders = await crew_with_orders(db, seoul, offsets=(0.02, 0.005))
    ap = await add_device(seoul, 9, HERE["latitude"], HERE["longitude"], kind="wifi_ap")
    orders.append(await create_order(seoul.client, device_ids=[ap["id"]], crew_id=crew["id"], type="inspect_access_point"))
    context = await open_context(viewport=TABLET)
    page = await sign_in(context, key, "/#/crew")
    await expect(page.get_by_test_id("crew-order")).to_have_count(3, timeout=WAIT)
    await expect(page.get_by_test_id("crew-sort")).to_contain_text("no location", timeout=WAIT)
    assert [await i.get_attribute("data-id") for i in await page.get_by_test_id("crew-order").all()] == \
        [o["id"] for o in orders]
    # Each device named by its kind in words (an access point once read "wifi ap").
    await expect(page.get_by_test_id("crew-order").last).to_contain_text("Wi-Fi access point")


async def test_an_operator_is_told_the_view_needs_a_crew_key(seoul, open_context):
    context = await open_context(viewport=TABLET)
    page = await sign_in(context, seoul.key, "/#/crew")
    await expect(page.get_by_test_id("crew-no-crew")).to_contain_text("crew key")


async def test_a_crew_closes_a_work_order_from_the_tablet(db, seoul, open_context):
    _, page, order = await one_order_open(db, seoul, open_context)
    status = page.get_by_test_id("order-status")
    await expect(page.get_by_test_id("order-device")).to_contain_text("seoul-streetlight-0")
    # Touch targets are 44 px at least; the buttons work from the keyboard too.
    small = await page.evaluate("""() => [...document.querySelectorAll(
        'main button, main select, main textarea, main .button, main .crew-back')]
        .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().height < 44).map((e) => e.outerHTML)""")
    assert small == []
    await page.get_by_role("button", name="Start work").focus()
    await page.keyboard.press("Enter")
    await expect(status).to_have_text("In progress", timeout=WAIT)
    await expect(page.get_by_test_id("pending")).to_have_count(0, timeout=WAIT)
    await screenshot(page, "crew-work-order")
    await page.get_by_role("button", name="Close as done…").click()
    await page.get_by_label("Resolution").select_option("lamp_replaced")
    await page.get_by_label("Time spent (minutes, optional)").fill("25")
    await page.get_by_role("button", name="Close as done", exact=True).click()
    await expect(status).to_have_text("Done", timeout=WAIT)
    await expect(page.get_by_test_id("pending")).to_have_count(0, timeout=WAIT)
    closed = (await seoul.client.get(f"{WORKORDERS}/{order['id']}")).json()
    assert closed["status"] in ("done", "verified") and closed["resolution_code"] == "lamp_replaced"
    assert closed["time_spent_minutes"] == 25 and closed["closed_at"]
    # No move is left for a closed work order.
    await expect(page.get_by_test_id("order-moves").get_by_role("button")).to_have_count(0)


async def test_changes_made_offline_wait_and_go_out_once_when_the_network_is_back(db, seoul, open_context):
    context, page, order = await one_order_open(db, seoul, open_context)
    status = page.get_by_test_id("order-status")

    await context.set_offline(True)
    await page.get_by_label("New note").fill("pole leaning, bring a ladder")
    await page.get_by_role("button", name="Add note").click()
    await page.get_by_role("button", name="On my way").click()
    banner = page.get_by_test_id("crew-banner")
    await expect(banner).to_contain_text("Offline — 2 changes waiting", timeout=WAIT)
    await expect(page.get_by_test_id("note-pending")).to_contain_text("pole leaning")
    await expect(status).to_have_text("On the way")
    assert (await seoul.client.get(f"{WORKORDERS}/{order['id']}")).json()["status"] == "assigned"
    # The list still shows what the tablet saw, with the change waiting.
    await page.get_by_role("link", name="← My work orders").click()
    item = page.get_by_test_id("crew-order")
    await expect(item).to_have_count(1, timeout=WAIT)
    await expect(item.get_by_test_id("order-status")).to_have_text("On the way")
    await expect(item.get_by_test_id("pending")).to_have_text("2 changes waiting to send")
    await item.click()
    await expect(status).to_have_text("On the way", timeout=WAIT)

    await context.set_offline(False)
    await expect(banner).to_have_attribute("data-state", "ok", timeout=30_000)
    await expect(page.get_by_test_id("pending")).to_have_count(0)
    after = (await seoul.client.get(f"{WORKORDERS}/{order['id']}")).json()
    assert after["status"] == "en_route"
    assert after["notes"].count("pole leaning, bring a ladder") == 1
    assert after["version"] == order["version"] + 2
    await expect(page.get_by_test_id("order-notes")).to_contain_text("pole leaning, bring a ladder")
    assert not await page.get_by_test_id("crew-conflict").count()


async def test_a_change_the_control_room_made_meanwhile_is_shown_as_a_conflict(db, seoul, open_context):
    context, page, order = await one_order_open(db, seoul, open_context)
    await context.set_offline(True)
    await page.get_by_role("button", name="On my way").click()
    await expect(page.get_by_test_id("crew-banner")).to_contain_text("1 change waiting", timeout=WAIT)
    # While the tablet is away, the control room raises the priority: the tablet's version is stale.
    await patch_order(seoul.client, order, priority="urgent")
    await context.set_offline(False)
    conflict = page.get_by_test_id("crew-conflict")
    await expect(conflict).to_contain_text("Not applied", timeout=30_000)
    await expect(conflict).to_contain_text("version 2")
    assert (await seoul.client.get(f"{WORKORDERS}/{order['id']}")).json()["status"] == "assigned"
    # The crew, having seen it, applies the move on what is there now.
    await page.get_by_role("button", name="Apply again on the current version").click()
    await expect(page.get_by_test_id("order-status")).to_have_text("On the way", timeout=WAIT)
    await expect(conflict).to_have_count(0)
    await expect(page.get_by_test_id("crew-banner")).to_have_attribute("data-state", "ok", timeout=WAIT)
    after = (await seoul.client.get(f"{WORKORDERS}/{order['id']}")).json()
    assert (after["status"], after["priority"]) == ("en_route", "urgent")


async def test_a_photo_goes_up_and_shows_as_a_thumbnail(db, seoul, open_context):
    _, page, order = await one_order_open(db, seoul, open_context)
    await page.locator("#crew-photo").set_input_files(
        files=[{"name": "pole.png", "mimeType": "image/png", "buffer": png()}])
    thumb = page.get_by_test_id("photo-thumb")
    await expect(thumb).to_have_count(1, timeout=WAIT)
    await page.wait_for_function(
        "() => { const img = document.querySelector('[data-testid=photo-thumb]'); return img && img.naturalWidth === 48; }")
    photos = (await seoul.client.get(f"{WORKORDERS}/{order['id']}/attachments")).json()
    assert len(photos) == 1 and photos[0]["media_type"] == "image/png"
    assert photos[0]["id"] in await thumb.get_attribute("src")
    # A camera's big photo goes up as a JPEG small enough to wait offline.
    big = png(700, noise=True)
    assert len(big) > 1024 * 1024
    await page.locator("#crew-photo").set_input_files(
        files=[{"name": "camera.png", "mimeType": "image/png", "buffer": big}])
    await expect(thumb).to_have_count(2, timeout=WAIT)
    photos = (await seoul.client.get(f"{WORKORDERS}/{order['id']}/attachments")).json()
    assert [p["media_type"] for p in photos] == ["image/png", "image/jpeg"]
    assert photos[1]["size_bytes"] < len(big)


async def test_my_route_lists_its_stops_in_order_and_marks_them(db, seoul, open_context):
    crew = await add_crew(seoul, "Bin team")
    issued = await ApiKeyService(db).issue(seoul.principal, Role.CREW, "tablet", UUID(crew["id"]))
    today = datetime.now(ZoneInfo("Asia/Seoul")).date()
    seeded = await seed_route(db, seoul.tenant_id, bins=3, day=today)
    assigned = await seoul.client.post(f"/api/v1/routes/{seeded.route_id}/assign", json={"crew_id": crew["id"]})
    assert assigned.status_code == 200, assigned.text

    _, page = await tablet(open_context, issued.secret, "/#/crew/route")
    stops = page.get_by_test_id("crew-stop")
    await expect(stops).to_have_count(4, timeout=WAIT)
    assert [await s.get_attribute("data-id") for s in await stops.all()] == [str(i) for i in seeded.stop_ids]
    assert [await s.get_attribute("data-seq") for s in await stops.all()] == ["0", "1", "2", "3"]
    # Trucks counted from 1 as people count them (the plan numbers a vehicle type's trucks from 0).
    await expect(page.get_by_test_id("crew-route").locator("h2")).to_contain_text("Truck 1")
    await expect(stops.nth(3)).to_contain_text("Disposal site")

    await page.get_by_role("button", name="Stop 1 done").click()
    await expect(stops.nth(0).get_by_test_id("stop-status")).to_have_text("done", timeout=WAIT)
    await page.get_by_role("button", name="Skip stop 2…").click()
    await page.get_by_label("Why").select_option("blocked")
    await page.get_by_label("Notes (optional)").fill("car parked on it")
    await page.get_by_role("button", name="Skip stop", exact=True).click()
    await expect(stops.nth(1).get_by_test_id("stop-status")).to_have_text("skipped (blocked)", timeout=WAIT)
    await expect(page.get_by_test_id("crew-banner")).to_have_attribute("data-state", "ok", timeout=WAIT)
    await expect(page.get_by_test_id("route-progress")).to_contain_text("2 of 4", timeout=WAIT)

    route = (await seoul.client.get(f"/api/v1/routes/{seeded.route_id}")).json()
    assert route["status"] == "in_progress"
    assert [(s["status"], s.get("skip_reason")) for s in route["stops"]][:2] == [("done", None), ("skipped", "blocked")]
    assert route["stops"][1]["notes"] == "car parked on it"
    await screenshot(page, "crew-route")
