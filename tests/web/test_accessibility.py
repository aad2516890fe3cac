"""Each view from the keyboard, in a real Chromium: every control has an accessible name, images
have alt text, Tab reaches the main controls, and text that users and devices wrote (names,
districts, addresses) is shown as text, never run as markup."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.web.conftest import sign_in
from tests.web.test_crew_tablet import crew_with_orders, tablet
from tests.web.test_device_page import open_device

WAIT = 15_000
# Markup a person could type into a device's district or address: shown, it must stay text.
HOSTILE = '<img src="/ui/icon.svg" data-injected="1"><b data-injected="1">x</b>'

# Every focusable or operable element without a name a screen reader could read out: an
# aria-label, aria-labelledby, a <label>, a title, its own text (or an image's alt in it), or a
# button-type input's value. Images without alt are reported too.
UNNAMED = """() => {
  const text = (el) => (el.textContent || '').trim();
  const named = (el) => {
    if ((el.getAttribute('aria-label') || '').trim()) return true;
    const by = (el.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean);
    if (by.some((id) => text(document.getElementById(id) || document.createElement('i')))) return true;
    if (el.labels && [...el.labels].some((label) => text(label))) return true;
    if ((el.getAttribute('title') || '').trim()) return true;
    if (el.localName === 'input' && ['submit', 'button', 'reset'].includes(el.type) && el.value) return true;
    if (el.localName === 'input' || el.localName === 'select' || el.localName === 'textarea') return false;
    return Boolean(text(el)) || [...el.querySelectorAll('img[alt]')].some((img) => img.alt.trim());
  };
  const controls = document.querySelectorAll(
    'button, a[href], input:not([type=hidden]), select, textarea, [role=button], [tabindex]:not([tabindex="-1"])');
  return {
    unnamed: [...controls].filter((el) => !named(el)).map((el) => el.outerHTML.slice(0, 160)),
    imagesWithoutAlt: [...document.querySelectorAll('img:not([alt])')].map((el) => el.outerHTML.slice(0, 160)),
    injected: document.querySelectorAll('[data-injected]').length,
  };
}"""

# The contrast of the focused element's text against the first opaque background behind it
# (WCAG's relative luminance).
FOCUSED_CONTRAST = """() => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const luminance = ([r, g, b]) => [r, g, b].map((v) => v / 255)
    .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4))
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  let el = document.activeElement;
  const text = rgb(getComputedStyle(el).color);
  let back = null;
  for (; el && !back; el = el.parentElement) {
    const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length < 4 || c[3] > 0.5) back = c;
  }
  const [a, b] = [luminance(text), luminance(back || [255, 255, 255])].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""

# What has the focus, in words a test can match: its test id, else its accessible label or text.
FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return '';
  return el.dataset.testid || el.getAttribute('aria-label') || (el.labels && el.labels[0]?.textContent)
    || el.textContent.trim().slice(0, 60) || el.id || el.localName;
}"""


async def check_names(page: Page) -> None:
    found = await page.evaluate(UNNAMED)
    assert found["unnamed"] == [], "controls without an accessible name"
    assert found["imagesWithoutAlt"] == [], "images without alt"
    assert found["injected"] == 0, "a user's text was drawn as markup"


async def tab_through(page: Page, presses: int) -> list[str]:
    """Tab from the top of the page, at most `presses` times, until the focus leaves the page
    (past its last control); what had the focus after each press, in order."""
    await page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")
    await page.locator("body").focus()
    seen = []
    for _ in range(presses):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(FOCUSED)
        if not focused:
            break
        seen.append(focused)
    return seen


async def test_the_control_room_is_named_and_reached_from_the_keyboard(open_context, seoul):
    for n, (lat, lon) in enumerate(((37.5665, 126.978), (37.5700, 126.990))):
        response = await seoul.client.post("/api/v1/devices", json={
            "kind": "streetlight", "endpoint": f"seoul-a11y-{n}", "district": HOSTILE, "address": HOSTILE,
            "location": {"lat": lat, "lon": lon}})
        assert response.status_code == 201, response.text
    page = await sign_in(await open_context(), seoul.key)
    assert await page.evaluate("document.documentElement.lang") == "en"
    await expect(page.get_by_test_id("count-devices")).to_have_text("2", timeout=WAIT)
    await expect(page.locator(".leaflet-marker-icon[aria-label]").first).to_be_attached(timeout=WAIT)
    await check_names(page)
    assert await page.locator("main h1").count() == 1
    seen = await tab_through(page, 40)
    # The top bar, then the map (Leaflet's keyboard panning), its markers and its zoom buttons.
    # An admin's top bar leads to the city's settings too.
    assert seen == ["Skip to content", "Fleet Seoul", "Control room", "City settings", "logout", "control-map",
                    "map-device", "map-device", "Zoom in", "Zoom out"], seen
    # The skip link moves the focus to the view, and the view stays (the hash is the router's).
    await page.get_by_role("link", name="Skip to content").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("main#main")).to_be_focused()
    assert await page.evaluate("window.location.hash") in ("", "#/")
    await expect(page.get_by_test_id("count-devices")).to_have_text("2")
    # Enter on a device's marker opens its popup; its link takes the focus and is named.
    await page.get_by_test_id("map-device").first.focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("popup-device-link")).to_be_focused()
    await check_names(page)
    # Leaflet's light-theme colours do not show through the dark theme, focused or not.
    assert await page.evaluate(FOCUSED_CONTRAST) >= 4.5
    await page.locator(".leaflet-popup-close-button").focus()
    assert await page.evaluate(FOCUSED_CONTRAST) >= 4.5
    await page.get_by_role("button", name="Zoom in").focus()
    assert await page.evaluate(FOCUSED_CONTRAST) >= 4.5


async def test_the_device_page_is_named_and_its_controls_reached_from_the_keyboard(open_context, seoul):
    response = await seoul.client.post("/api/v1/devices", json={
        "kind": "streetlight", "endpoint": "seoul-a11y-light", "district": HOSTILE, "address": HOSTILE,
        "location": {"lat": 37.5665, "lon": 126.978}, "nominal_wattage": 90})
    assert response.status_code == 201, response.text
    page = await open_device(await open_context(), seoul.key, response.json())
    await expect(page.get_by_test_id("dim-form")).to_be_visible(timeout=WAIT)
    await check_names(page)
    headings = await page.evaluate("[...document.querySelectorAll('main h1, main h2, main h3')].map(h => +h.localName[1])")
    assert headings[0] == 1 and all(b - a <= 1 for a, b in zip(headings, headings[1:])), headings
    seen = await tab_through(page, 60)
    for control in ("Level (%)", "For (minutes)", "Reason", "Dim", "Resource path", "Read"):
        assert control in seen, (control, seen)
    # The dim form is sent from the keyboard (Enter in a field submits it).
    await page.get_by_label("Level (%)").fill("35")
    await page.get_by_label("Level (%)").press("Enter")
    await expect(page.get_by_test_id("device-overrides")).to_contain_text("35 %", timeout=WAIT)
    await check_names(page)  # the new override's cancel button too


async def test_the_crews_list_is_named_and_reached_from_the_keyboard(db, seoul, open_context):
    _, key, orders = await crew_with_orders(db, seoul)
    _, page = await tablet(open_context, key, "/#/crew")
    await expect(page.get_by_test_id("crew-order")).to_have_count(len(orders), timeout=WAIT)
    # The list is drawn from what the tablet kept, then again once it knows where it is.
    await expect(page.get_by_test_id("crew-sort")).to_have_attribute("data-sort", "distance", timeout=WAIT)
    await check_names(page)
    seen = await tab_through(page, 30)
    assert "My work orders" in seen and "My route" in seen and "logout" in seen
    assert seen.count("crew-order") == len(orders), seen
    # Enter on the nearest order opens its page.
    first = page.get_by_test_id("crew-order").first
    await first.focus()
    await page.keyboard.press("Enter")
    # The list's items show a status too: wait for the work order's page before looking.
    await expect(page).to_have_url(re.compile(r"#/crew/work-orders/[0-9a-f-]{36}$"), timeout=WAIT)
    await expect(page.locator("body[data-view='crew-work-order']")).to_have_count(1, timeout=WAIT)
    await expect(page.get_by_test_id("order-status")).to_be_visible(timeout=WAIT)
    await check_names(page)
