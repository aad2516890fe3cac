"""Swagger UI at /schema renders in a real browser that can reach nothing but Fleet on 127.0.0.1."""

from __future__ import annotations

import asyncio
import html
import shutil
from pathlib import Path

import httpx

from tests.ci import unavailable

HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Every request not for 127.0.0.1 goes to a proxy on a port nobody listens on; `<-loopback>`
# drops Chromium's implicit bypass for localhost and the rest of 127/8, and must come first.
# Names resolve to nothing besides, in case anything looks one up around the proxy.
OFFLINE = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>;127.0.0.1",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
METHODS = {"get", "post", "put", "patch", "delete"}


def chromium() -> str:
    """Debian's Chromium; `.ci/run` installs it, so under CI its absence is a failure."""
    found = shutil.which("chromium")
    if not found:
        unavailable("chromium is not installed (Debian: apt-get install chromium)")
    return found


async def offline_dom(url: str, profile: Path) -> str:
    """The page's DOM once its scripts ran in a browser cut off from everything but 127.0.0.1."""
    # Virtual time lets the page's scripts and fetches settle before the dump without waiting
    # on the wall clock; a navigation that fails dumps nothing.
    browser = await asyncio.create_subprocess_exec(
        chromium(), *HEADLESS, *OFFLINE, f"--user-data-dir={profile}",
        "--dump-dom", "--virtual-time-budget=10000", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    # The API answers from this event loop, so the browser is awaited, never waited for.
    dom, log = await asyncio.wait_for(browser.communicate(), timeout=120)
    assert browser.returncode == 0, log.decode(errors="replace")[-4000:]
    return dom.decode()


async def test_swagger_ui_renders_the_whole_document_offline(api_url, tmp_path):
    assert api_url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(base_url=api_url) as client:
        document = (await client.get("/schema/openapi.json")).json()
    dom = await offline_dom(f"{api_url}/schema", tmp_path / "profile")
    # Each operation's row exists only once the bundle ran, fetched the document and laid it out.
    assert 'class="swagger-ui"' in dom and 'class="opblock-summary-path"' in dom, dom[-2000:]
    assert f">{html.escape(document['info']['title'], quote=False)}<" in dom
    for path, item in document["paths"].items():
        assert f'data-path="{path}"' in dom, path
        for method, operation in item.items():
            if method in METHODS:
                assert html.escape(operation["summary"], quote=False) in dom, (method, path)


async def test_the_browser_reaches_nothing_else_not_even_fleet_by_another_name(api_url, tmp_path):
    dom = await offline_dom(f"{api_url.replace('127.0.0.1', 'localhost')}/schema", tmp_path / "profile")
    assert "swagger-ui" not in dom
