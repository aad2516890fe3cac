"""Signing in and out in the browser, as a person at the control room would."""

from __future__ import annotations

from tests.web.conftest import screenshot, sign_in


async def test_a_key_signs_in_through_the_form_and_signing_out_shows_the_form_again(open_context, seoul):
    context = await open_context()
    page = await context.new_page()
    await page.goto("/")
    await screenshot(page, "sign-in")
    page = await sign_in(context, seoul.key)
    assert page.url.endswith("/")
    cookies = {c["name"]: c for c in await context.cookies()}
    assert cookies["fleet_session"]["httpOnly"] and cookies["fleet_session"]["sameSite"] == "Lax"
    # Scripts cannot read the cookie: only Fleet's pages' token is in the page.
    assert "fleet_session" not in await page.evaluate("document.cookie")
    async with page.expect_response(lambda r: r.url.endswith("/session/logout")) as logout:
        await page.get_by_role("button", name="Sign out").click()
    # The answer clears the cookie...
    assert "fleet_session=;" in await (await logout.value).header_value("set-cookie")
    await page.wait_for_selector("form[action='/session']")
    # ...and the session is over on the server: a copy the page's last poll renewed on its way
    # back (it can cross the sign-out) opens nothing.
    assert await page.evaluate("fetch('/api/v1/session').then(r => r.status)") == 401


async def test_a_wrong_key_is_told_why_on_the_form(open_context):
    context = await open_context()
    page = await context.new_page()
    await page.goto("/")
    await page.get_by_label("API key").fill("fleet_wrong_key")
    await page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_test_id("signin-error")
    assert "not valid" in await alert.inner_text()
