"""Device security in the browser: a device's DTLS credential on its page (a PSK's key shown once,
a public key's fingerprint, rotation and revocation behind a confirmation, whether it registered
over coaps), no controls for a viewer, and the city's NoSec policy round-tripping."""

from __future__ import annotations

import hashlib
import re

from cryptography.hazmat.primitives import serialization
from playwright.async_api import Page, expect

from fleet.security.crypto import CredentialCipher, KeyOwner
from tests.api.test_device_security import p256_pem
from tests.conftest import TEST_SECURITY
from tests.web.conftest import screenshot, sign_in
from tests.web.test_accessibility import check_names, tab_through
from tests.web.test_device_page import open_device, streetlight

WAIT = 15_000


async def stored_key(db, credential_id: str) -> bytes:
    async with db.system_tx() as conn:
        row = await conn.fetchrow("select id, tenant_id, device_id, purpose, key_ciphertext, key_nonce "
                                  "from device_credentials where id = $1", credential_id)
    return CredentialCipher(TEST_SECURITY).open(KeyOwner.of(row), row["key_ciphertext"], row["key_nonce"])


async def shown_key(page: Page) -> str:
    """The key in the once-only dialog, read as a person would (checked, then the dialog closed)."""
    dialog = page.get_by_test_id("psk-key-dialog")
    await expect(dialog).to_be_visible(timeout=WAIT)
    await expect(dialog.get_by_test_id("psk-key-dialog-warning")).to_contain_text("it will not be shown again")
    return await dialog.get_by_label("Key (hex)").input_value()


async def test_an_admin_sets_a_psk_sees_the_key_once_then_rotates_and_revokes_it(db, seoul, open_context):
    light = await streetlight(seoul)
    context = await open_context()
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = await open_device(context, seoul.key, light)
    panel = page.get_by_test_id("device-security")
    await expect(panel.get_by_test_id("security-mode")).to_contain_text("NoSec", timeout=WAIT)
    await expect(panel.get_by_test_id("security-bootstrap")).to_have_text("none")
    await expect(panel.get_by_test_id("security-registration")).to_have_text("not registered")
    # A test city takes NoSec devices: nothing to warn about yet, and nothing to revoke.
    await expect(panel.get_by_test_id("security-note")).to_have_count(0)
    await expect(panel.get_by_test_id("revoke-control")).to_be_hidden()
    await expect(panel).not_to_contain_text("null")

    await page.get_by_label("PSK identity").fill("jg-0001-psk")
    await page.get_by_role("button", name="Set PSK").click()
    key = await shown_key(page)
    assert re.fullmatch(r"[0-9a-f]{32}", key), key
    dialog = page.get_by_test_id("psk-key-dialog")
    await expect(dialog).to_contain_text("jg-0001-psk")
    await check_names(page)
    await dialog.get_by_role("button", name="Copy key").click()
    await expect(dialog.get_by_test_id("psk-key-dialog-copied")).to_have_text("Copied to the clipboard.")
    assert await page.evaluate("navigator.clipboard.readText()") == key
    await screenshot(page, "device-security-key")
    # The key shown is the one Fleet stored (encrypted) for the device.
    (credential,) = (await seoul.client.get(f"/api/v1/devices/{light['id']}/security")).json()["credentials"]
    assert credential["identity"] == "jg-0001-psk" and "key_hex" not in credential
    assert (await stored_key(db, credential["id"])).hex() == key
    await dialog.get_by_role("button", name="I have copied the key, close").click()
    await expect(dialog).to_have_count(0)
    # Back on the control that opened it, which now offers a rotation.
    await expect(page.get_by_role("button", name="Rotate PSK")).to_be_focused()
    await expect(panel.get_by_test_id("security-mode")).to_contain_text("identity jg-0001-psk")
    await expect(panel.get_by_test_id("security-state")).to_contain_text("active since")
    assert key not in await page.content()

    # A reload shows the identity, and the key nowhere.
    await page.reload()
    await expect(panel.get_by_test_id("security-mode")).to_contain_text("jg-0001-psk", timeout=WAIT)
    assert key not in await page.content()
    await expect(page.get_by_test_id("psk-key-dialog")).to_have_count(0)

    # A rotation asks first (the old key stops at once); cancelled, nothing changes.
    await page.get_by_role("button", name="Rotate PSK").click()
    replace = page.get_by_test_id("replace-dialog")
    await expect(replace).to_contain_text('PSK (identity "jg-0001-psk") stops working at once')
    await expect(replace.get_by_role("button", name="Cancel")).to_be_focused()
    await replace.get_by_role("button", name="Cancel").click()
    await expect(replace).to_have_count(0)
    assert [c["version"] for c in (await seoul.client.get(f"/api/v1/devices/{light['id']}/security")
                                   ).json()["credentials"]] == [1]
    await page.get_by_role("button", name="Rotate PSK").click()
    await replace.get_by_role("button", name="Replace it").click()
    rotated = await shown_key(page)
    assert rotated != key and re.fullmatch(r"[0-9a-f]{32}", rotated)
    await page.keyboard.press("Escape")  # closes it too
    await expect(page.get_by_test_id("psk-key-dialog")).to_have_count(0)
    await expect(panel.get_by_test_id("security-state")).to_contain_text("version 2", timeout=WAIT)

    # Registered over coaps (as the LwM2M server records it): both panels say so.
    async with db.system_tx() as conn:
        await conn.execute(
            """insert into registrations (id, device_id, tenant_id, endpoint, address, port, lifetime_s, binding,
                                          lwm2m_version, object_links, node, expires_at, secure)
               values ('websec1', $1, $2, $3, '192.0.2.7', 40000, 300, 'U', '1.1', '', 'n',
                       now() + interval '5 minutes', true)""", light["id"], seoul.tenant_id, light["endpoint"])
    await page.reload()
    await expect(panel.get_by_test_id("security-registration")).to_have_text("over coaps:// (DTLS)", timeout=WAIT)
    await expect(page.get_by_test_id("device-state")).to_contain_text("192.0.2.7:40000 over coaps (DTLS)")

    # Revoked (after a confirmation that says what the city allows next): NoSec again.
    await page.get_by_role("button", name="Revoke credentials").click()
    revoke = page.get_by_test_id("revoke-dialog")
    await expect(revoke).to_contain_text("register over plain CoAP")
    await revoke.get_by_role("button", name="Revoke").click()
    await expect(panel.get_by_test_id("security-mode")).to_contain_text("NoSec", timeout=WAIT)
    assert (await seoul.client.get(f"/api/v1/devices/{light['id']}/security")).json()["mode"] == "nosec"
    await expect(panel.get_by_test_id("revoke-control")).to_be_hidden()


async def test_a_public_key_shows_its_fingerprint_and_a_bad_one_its_problem(seoul, open_context):
    light = await streetlight(seoul)
    page = await open_device(await open_context(), seoul.key, light)
    pem = page.get_by_label("Public key (PEM)")
    await pem.fill("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
    await page.get_by_role("button", name="Set public key").click()
    await expect(page.get_by_test_id("rpk-error")).to_contain_text("public_key: must be a P-256 public key", timeout=WAIT)

    key = p256_pem()
    der = serialization.load_pem_public_key(key.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    fingerprint = hashlib.sha256(der).hexdigest()
    await pem.fill(key)
    await page.get_by_role("button", name="Set public key").click()
    mode = page.get_by_test_id("security-mode")
    await expect(mode).to_contain_text("Raw public key (RPK)", timeout=WAIT)
    await expect(mode).to_contain_text(" ".join(re.findall("....", fingerprint)))
    await expect(page.get_by_test_id("rpk-error")).to_be_empty()
    await expect(pem).to_have_value("")
    await page.get_by_text("Show the public key (PEM)").click()
    await expect(page.get_by_test_id("device-security").locator("pre.pem")).to_contain_text("BEGIN PUBLIC KEY")
    await check_names(page)
    headings = await page.evaluate("[...document.querySelectorAll('main h1, main h2, main h3')].map(h => +h.localName[1])")
    assert headings[0] == 1 and all(b - a <= 1 for a, b in zip(headings, headings[1:])), headings
    seen = await tab_through(page, 80)
    # Tab goes on from the summary last clicked: through the forms, to the end of the page.
    for control in ("PSK identity", "Purpose", "Switch to a PSK", "Public key (PEM)", "Set public key",
                    "Revoke credentials"):
        assert control in seen, (control, seen)


async def test_a_viewer_sees_how_a_device_authenticates_and_no_control(seoul, open_context):
    light = await streetlight(seoul)
    for body in ({"mode": "psk", "identity": "jg-view-psk"},
                 {"mode": "psk", "purpose": "bootstrap", "identity": "jg-view-factory", "key_hex": "11" * 16}):
        response = await seoul.client.put(f"/api/v1/devices/{light['id']}/security", json=body)
        assert response.status_code == 200, response.text
    viewer = (await seoul.client.post("/api/v1/apikeys", json={"role": "viewer", "name": "wall"})).json()["key"]
    page = await open_device(await open_context(), viewer, light)
    panel = page.get_by_test_id("device-security")
    await expect(panel.get_by_test_id("security-mode")).to_contain_text("identity jg-view-psk", timeout=WAIT)
    await expect(panel.get_by_test_id("security-bootstrap")).to_contain_text("identity jg-view-factory")
    for form in ("psk-form", "rpk-form", "revoke-control"):
        assert await page.get_by_test_id(form).count() == 0, form
    assert await page.locator("main button, main textarea").count() == 0
    # The settings are an admin's: no link, and the view itself only reads them.
    assert await page.get_by_role("link", name="City settings").count() == 0
    await page.goto("/#/settings")
    await expect(page.get_by_test_id("policy-nosec")).to_have_text("allowed", timeout=WAIT)
    await expect(page.get_by_test_id("policy-modes")).to_have_text("Pre-shared keys (PSK), Raw public keys (RPK)")
    assert await page.locator("main input, main button").count() == 0


async def test_the_nosec_policy_round_trips_through_the_settings_view(seoul, open_context):
    page = await sign_in(await open_context(), seoul.key)
    await page.get_by_role("link", name="City settings").click()
    nosec = page.get_by_label("Allow devices without DTLS (NoSec)")
    await expect(nosec).to_be_checked(timeout=WAIT)  # a test city takes NoSec devices
    await expect(page.get_by_label("Pre-shared keys (PSK)")).to_be_checked()
    await expect(page.get_by_label("Raw public keys (RPK)")).to_be_checked()
    await check_names(page)
    assert await page.locator("main h1").count() == 1

    # Turning NoSec off asks first; cancelled, nothing is sent.
    await nosec.uncheck()
    await page.get_by_role("button", name="Save", exact=True).click()
    dialog = page.get_by_test_id("policy-dialog")
    await expect(dialog).to_contain_text("Devices registered over plain CoAP are disconnected now")
    await check_names(page)
    await dialog.get_by_role("button", name="Cancel").click()
    assert (await seoul.client.get("/api/v1/tenant")).json()["allow_nosec_devices"] is True
    await page.get_by_role("button", name="Save", exact=True).click()
    await dialog.get_by_role("button", name="Save and apply").click()
    await expect(page.get_by_test_id("policy-saved")).to_contain_text("Saved", timeout=WAIT)
    assert (await seoul.client.get("/api/v1/tenant")).json()["allow_nosec_devices"] is False
    await screenshot(page, "city-settings")
    # A device without a key is now told it cannot register.
    light = await streetlight(seoul)
    await page.goto(f"/#/devices/{light['id']}")
    await expect(page.get_by_test_id("security-note")).to_contain_text("This city refuses devices without DTLS",
                                                                      timeout=WAIT)

    await page.goto("/#/settings")
    await expect(nosec).not_to_be_checked(timeout=WAIT)
    # Allowing more asks nothing; leaving a mode out asks again and names what it cuts off.
    await nosec.check()
    await page.get_by_label("Raw public keys (RPK)").uncheck()
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(dialog).to_contain_text("Devices with RPK credentials can no longer complete a DTLS handshake")
    await expect(dialog).not_to_contain_text("plain CoAP")
    await dialog.get_by_role("button", name="Save and apply").click()
    await expect(page.get_by_test_id("policy-saved")).to_contain_text("Saved", timeout=WAIT)
    tenant = (await seoul.client.get("/api/v1/tenant")).json()
    assert tenant["allow_nosec_devices"] is True and tenant["security_modes"] == ["psk"]
    await page.get_by_label("Raw public keys (RPK)").check()
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_test_id("policy-saved")).to_contain_text("Saved", timeout=WAIT)
    assert (await seoul.client.get("/api/v1/tenant")).json()["security_modes"] == ["psk", "rpk"]
    await expect(dialog).to_have_count(0)


async def test_an_operator_sets_credentials_but_not_the_citys_policy(seoul, open_context):
    light = await streetlight(seoul)
    operator = (await seoul.client.post("/api/v1/apikeys", json={"role": "operator", "name": "desk"})).json()["key"]
    page = await open_device(await open_context(), operator, light)
    # PUT …/security needs manage_devices, which operators have; PATCH /api/v1/tenant is the admins'.
    await expect(page.get_by_test_id("psk-form")).to_be_visible(timeout=WAIT)
    await expect(page.get_by_test_id("rpk-form")).to_be_visible()
    assert await page.get_by_role("link", name="City settings").count() == 0
    await page.goto("/#/settings")
    await expect(page.get_by_test_id("policy-nosec")).to_have_text("allowed", timeout=WAIT)
    assert await page.locator("main input, main button").count() == 0
