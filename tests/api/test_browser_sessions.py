"""Signing in with a key for a browser session: the cookie, CSRF, sign-out, revocation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import json
import re

import httpx
import pytest

from fleet.access.models import Role
from fleet.settings import HttpSettings, RateLimitSettings, WebSettings
from tests.conftest import serve_api

COOKIE = "fleet_session"


@asynccontextmanager
async def signed_in(api_url: str, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.post("/session", data={"key": key})
        assert response.status_code == 303, response.text
        yield client


async def test_signing_in_sets_an_httponly_samesite_cookie_and_sends_the_browser_home(api_url, seoul):
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.post("/session", data={"key": seoul.key})
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=fsess_")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert seoul.key not in cookie


async def test_the_cookie_reads_the_api_as_its_key_and_the_page_gets_its_csrf_token(api_url, seoul):
    async with signed_in(api_url, seoul.key) as client:
        me = (await client.get("/api/v1/session")).json()
        assert me["tenant"] == "seoul" and me["role"] == "admin" and me["csrf_token"]
        assert "send_commands" in me["permissions"]
        assert (await client.get("/api/v1/devices")).status_code == 200
        home = await client.get("/")
        assert 'id="fleet-session"' in home.text and me["csrf_token"] in home.text
        assert "default-src 'self'" in home.headers["content-security-policy"]


async def test_a_write_with_the_cookie_needs_the_pages_csrf_token(api_url, seoul):
    async with signed_in(api_url, seoul.key) as client:
        token = (await client.get("/api/v1/session")).json()["csrf_token"]
        device = {"endpoint": "lamp-1", "kind": "streetlight", "location": {"lat": 37.5, "lon": 127.0}}
        refused = await client.post("/api/v1/devices", json=device)
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "X-CSRF-Token" in refused.json()["detail"]
        forged = await client.post("/api/v1/devices", json=device,
                                   headers={"X-CSRF-Token": token, "Origin": "https://evil.example"})
        assert forged.status_code == 403
        made = await client.post("/api/v1/devices", json=device, headers={"X-CSRF-Token": token})
        assert made.status_code == 201, made.text


async def test_a_bearer_key_needs_no_csrf_token(api_url, seoul):
    device = {"endpoint": "lamp-1", "kind": "streetlight", "location": {"lat": 37.5, "lon": 127.0}}
    assert (await seoul.client.post("/api/v1/devices", json=device)).status_code == 201
    assert (await seoul.client.get("/api/v1/session")).json()["csrf_token"] is None


async def test_a_wrong_key_gets_the_form_again_with_why(api_url):
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.post("/session", data={"key": "fleet_nope_nope"})
        assert response.status_code == 401
        assert "not valid" in response.text and 'name="key"' in response.text
        assert "set-cookie" not in response.headers
        assert (await client.get("/api/v1/session")).status_code == 401


async def test_a_stranger_gets_the_sign_in_form(api_url):
    async with httpx.AsyncClient(base_url=api_url) as client:
        page = await client.get("/")
    assert page.status_code == 200
    assert '<form method="post" action="/session">' in page.text and "fleet-session" not in page.text


async def test_signing_out_ends_the_session_for_good(api_url, seoul):
    async with signed_in(api_url, seoul.key) as client:
        secret = client.cookies[COOKIE]
        out = await client.post("/session/logout")
        assert out.status_code == 303 and out.headers["location"] == "/"
        assert "Max-Age=0" in out.headers["set-cookie"]
        # The old cookie, replayed by someone who kept it, opens nothing.
        replay = await client.get("/api/v1/devices", cookies={COOKIE: secret})
        assert replay.status_code == 401


async def test_a_revoked_key_signs_out_its_browser(api_url, seoul):
    issued = (await seoul.client.post("/api/v1/apikeys", json={"role": "viewer", "name": "wall"})).json()
    async with signed_in(api_url, issued["key"]) as client:
        assert (await client.get("/api/v1/devices")).status_code == 200
        assert (await seoul.client.delete(f"/api/v1/apikeys/{issued['api_key']['id']}")).status_code == 200
        assert (await client.get("/api/v1/devices")).status_code == 401


async def test_a_reporter_key_cannot_sign_in(api_url, city_factory):
    reporter = await city_factory("reporting", Role.REPORTER)
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.post("/session", data={"key": reporter.key})
    assert response.status_code == 403 and "Open311" in response.text


@pytest.mark.parametrize("body", [{}, {"other": "x"}])
async def test_a_sign_in_without_a_key_field_is_a_client_error(api_url, body):
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.post("/session", data=body)
    assert response.status_code == 400


async def test_signing_in_again_ends_the_browsers_earlier_session(api_url, seoul):
    async with signed_in(api_url, seoul.key) as client:
        earlier = client.cookies[COOKIE]
        again = await client.post("/session", data={"key": seoul.key})
        assert again.status_code == 303 and client.cookies[COOKIE] != earlier
        assert (await client.get("/api/v1/devices")).status_code == 200
        # A copy of the replaced cookie (taken before, or planted by someone) opens nothing.
    async with httpx.AsyncClient(base_url=api_url, cookies={COOKIE: earlier}) as replay:
        assert (await replay.get("/api/v1/devices")).status_code == 401


async def test_the_shells_session_block_carries_ampersands_and_angle_brackets_intact(db, seoul):
    tiles = "https://tiles.example.org/{z}/{x}/{y}.png?style=night&key=k"
    async with db.system_tx() as conn:
        await conn.execute("update tenants set name = $1 where slug = 'seoul'", "Seoul <North> & South")
    async with serve_api(db, web_settings=WebSettings(tiles_url=tiles)) as url:
        async with signed_in(url, seoul.key) as client:
            page = (await client.get("/")).text
    block = re.search(r'<script id="fleet-session" type="application/json">(.*?)</script>', page, re.S)
    embedded = json.loads(block.group(1))  # what the page's script parses: the text as written
    assert embedded["map"]["tiles_url"] == tiles
    assert embedded["tenant_name"] == "Seoul <North> & South"
    assert "<North>" not in block.group(1)


async def test_signing_in_spends_the_addresss_request_budget(db, seoul):
    http = HttpSettings(max_body_bytes=1024 * 1024,
                        limits=RateLimitSettings(address_per_s=0.001, address_burst=2))
    async with serve_api(db, http) as url, httpx.AsyncClient(base_url=url) as client:
        answers = [(await client.post("/session", data={"key": seoul.key})).status_code for _ in range(3)]
    assert answers == [303, 303, 429]


@pytest.mark.parametrize("method, path, send", [
    # A form another site could post without a preflight (multipart, urlencoded, text/plain).
    ("POST", "/api/v1/firmware/images", {"files": {"file": ("fw.bin", b"\0" * 16)}, "data": {"version": "9"}}),
    ("POST", "/api/v1/devices", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}),
    ("PATCH", "/api/v1/devices/00000000-0000-0000-0000-000000000001", {"json": {"status": "online"}}),
    ("PUT", "/api/v1/lighting/programs/00000000-0000-0000-0000-000000000001", {"json": {}}),
    ("DELETE", "/api/v1/apikeys/00000000-0000-0000-0000-000000000001", {}),
])
async def test_every_unsafe_method_and_body_with_the_cookie_needs_the_token(api_url, seoul, method, path, send):
    async with signed_in(api_url, seoul.key) as client:
        send = {**send, "headers": {**send.get("headers", {}), "Origin": api_url}}
        refused = await client.request(method, path, **send)
        assert refused.status_code == 403, refused.text
        assert "X-CSRF-Token" in refused.json()["detail"]


async def test_a_write_from_a_page_without_an_origin_of_its_own_is_refused(api_url, seoul):
    async with signed_in(api_url, seoul.key) as client:
        token = (await client.get("/api/v1/session")).json()["csrf_token"]
        # A sandboxed frame or a data: page says "null": not Fleet's page, whatever it carries.
        sandboxed = await client.post("/api/v1/devices", json={},
                                      headers={"X-CSRF-Token": token, "Origin": "null"})
        assert sandboxed.status_code == 403


async def test_the_cookie_files_no_open311_report(api_url, seoul):
    """Open311 takes only its own `api_key` field: a signed-in browser's cookie is no key there."""
    async with signed_in(api_url, seoul.key) as client:
        filed = await client.post("/open311/v2/requests.json", data={
            "jurisdiction_id": "seoul", "service_code": "streetlight_out", "lat": "37.56", "long": "126.97"})
    assert filed.status_code in (400, 401, 403), filed.text


async def test_behind_a_tls_proxy_the_cookie_is_secure_and_the_pages_origin_is_https(api_url, seoul):
    """A proxy that ends TLS and passes Host and X-Forwarded-Proto (uvicorn trusts it from
    FORWARDED_ALLOW_IPS, 127.0.0.1 by default): the cookie is Secure, and the page's https Origin
    is Fleet's own."""
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    async with httpx.AsyncClient(base_url=api_url, headers=proxied) as client:
        response = await client.post("/session", data={"key": seoul.key})
        assert response.status_code == 303 and "; Secure" in response.headers["set-cookie"]
        cookie = {COOKIE: response.cookies.get(COOKIE) or response.headers["set-cookie"].split(";")[0].split("=", 1)[1]}
        host = api_url.removeprefix("http://")
        token = (await client.get("/api/v1/session", cookies=cookie)).json()["csrf_token"]
        device = {"endpoint": "lamp-tls", "kind": "streetlight", "location": {"lat": 37.5, "lon": 127.0}}
        made = await client.post("/api/v1/devices", json=device, cookies=cookie,
                                 headers={"X-CSRF-Token": token, "Origin": f"https://{host}"})
        assert made.status_code == 201, made.text
        plain = await client.post("/api/v1/devices", json=device, cookies=cookie,
                                  headers={"X-CSRF-Token": token, "Origin": f"http://{host}"})
        assert plain.status_code == 403


async def test_each_use_gives_the_browser_the_cookie_for_another_idle_period(api_url, seoul):
    """The browser's copy must not run out while the session is in use (a wall screen never
    reloads): answers made with the cookie send it again with a fresh Max-Age."""
    async with signed_in(api_url, seoul.key) as client:
        secret = client.cookies[COOKIE]
        for path in ("/", "/api/v1/session", "/api/v1/devices"):
            renewed = (await client.get(path)).headers.get("set-cookie", "")
            assert renewed.startswith(f"{COOKIE}={secret};") and "Max-Age=43200" in renewed, path
            assert "HttpOnly" in renewed and "SameSite=Lax" in renewed
    # A bearer key's answers set no cookie.
    assert "set-cookie" not in (await seoul.client.get("/api/v1/devices")).headers
