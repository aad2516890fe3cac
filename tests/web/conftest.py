"""The pages in a real headless Chromium (Debian's, driven by Playwright with executable_path),
cut off from everything but Fleet on 127.0.0.1: a page that reached for a CDN would break here."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.api.test_docs_browser import OFFLINE, chromium

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", *OFFLINE]
# Where the tests leave a picture of each view; docs/web.md's come from a run with
# FLEET_SCREENSHOTS=docs/screenshots.
SCREENSHOTS = Path(os.environ.get("FLEET_SCREENSHOTS") or Path(__file__).parents[2] / "build" / "screenshots")
WALL = {"width": 1600, "height": 900}
TABLET = {"width": 800, "height": 1280}


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def open_context(browser: Browser, api_url: str) -> AsyncIterator[Callable[..., Awaitable[BrowserContext]]]:
    """Opens browser contexts (separate cookie jars) on the test's Fleet; every script error on
    any of their pages fails the test."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    async def open_(**options) -> BrowserContext:
        context = await browser.new_context(base_url=api_url, viewport=options.pop("viewport", WALL), **options)
        context.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
        contexts.append(context)
        return context

    yield open_
    for context in contexts:
        await context.close()
    assert not errors, f"script errors on the pages: {errors}"


async def sign_in(context: BrowserContext, key: str, path: str = "/") -> Page:
    """A page signed in through the form, as a person would, then at `path` (a hash route)."""
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto("/")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_selector("#fleet-session", state="attached")
    if path != "/":
        await page.goto(path)
    return page


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(target))
    return target
