"""`python -m bench.dashboard`: the control room's first paint in Debian's Chromium with
100,000 devices in the city, beside the same page for a city of 1,000 in the same run (the
ratio is the result), and the two API calls it waits for.

"First paint" is what a person at the wall screen waits for: from the navigation's start to
the moment the page has drawn the city's figures and the map's first aggregate
(`performance.mark('fleet:control-room-painted')`, set by views/control.js), in a fresh
browser context each time (no cache), signed in by cookie.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import uvicorn
from playwright.async_api import async_playwright

from api.app import create_app
from fleet.access.models import Role
from fleet.access.service import ApiKeyService, TenantService, system_principal
from fleet.db import Database
from fleet.db.embedded import start_embedded
from fleet.db.migrate import migrate
from fleet.settings import HttpSettings

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Seoul's 25 districts over the city's extent: devices fall in a grid of districts.
DISTRICTS = ["Jongno-gu", "Jung-gu", "Yongsan-gu", "Seongdong-gu", "Gwangjin-gu", "Dongdaemun-gu",
             "Jungnang-gu", "Seongbuk-gu", "Gangbuk-gu", "Dobong-gu", "Nowon-gu", "Eunpyeong-gu",
             "Seodaemun-gu", "Mapo-gu", "Yangcheon-gu", "Gangseo-gu", "Guro-gu", "Geumcheon-gu",
             "Yeongdeungpo-gu", "Dongjak-gu", "Gwanak-gu", "Seocho-gu", "Gangnam-gu", "Songpa-gu",
             "Gangdong-gu"]
PAINTED = "fleet:control-room-painted"


async def seed(db: Database, slug: str, devices: int) -> str:
    """A city of `devices` devices (lights, bins, access points; mostly online, some offline
    or in maintenance, 1 % with an active alarm), set in with one statement each."""
    tenant = await TenantService(db).create(slug, slug.title(), "Asia/Seoul")
    issued = await ApiKeyService(db).issue(system_principal(tenant), Role.ADMIN, "bench")
    async with db.system_tx() as conn:
        await conn.execute(
            """insert into devices (tenant_id, kind, endpoint, lat, lon, district, status)
               select $1, (array['streetlight','streetlight','streetlight','waste_bin','wifi_ap'])[1 + n % 5],
                      $2 || '-' || n,
                      37.45 + 0.25 * random(), 126.80 + 0.38 * random(),
                      ($3::text[])[1 + (n / 7) % 25],
                      case when n % 50 = 0 then 'offline' when n % 97 = 0 then 'maintenance' else 'online' end
               from generate_series(1, $4) n""",
            tenant.id, slug, DISTRICTS, devices)
        # Districts by position, so their outlines look like a city's.
        await conn.execute(
            """update devices set district = ($2::text[])[1 + (floor((lat - 37.45) / 0.05)::int * 5
                                                   + floor((lon - 126.80) / 0.076)::int) % 25]
               where tenant_id = $1""", tenant.id, DISTRICTS)
        await conn.execute(
            """insert into alarms (tenant_id, device_id, type, severity, first_seen, last_seen)
               select tenant_id, id, 'lamp_failure',
                      (array['critical','major','minor','warning'])[1 + seq % 4], now(), now()
               from devices where tenant_id = $1 and seq % 100 = 0""", tenant.id)
    return issued.secret


async def first_paint(browser, base: str, key: str) -> tuple[float, float | None]:
    """(ms to the control room painted, ms to the first contentful paint) in a fresh context."""
    async with httpx.AsyncClient(base_url=base) as client:
        signed = await client.post("/session", data={"key": key})
        cookie = signed.cookies["fleet_session"]
    context = await browser.new_context(viewport={"width": 1600, "height": 900})
    try:
        await context.add_cookies([{"name": "fleet_session", "value": cookie, "url": base}])
        page = await context.new_page()
        await page.goto(f"{base}/")
        await page.wait_for_selector("[data-painted='true']", state="attached", timeout=60_000)
        painted = await page.evaluate(f"performance.getEntriesByName('{PAINTED}')[0].startTime")
        fcp = await page.evaluate(
            "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime ?? null")
        return painted, fcp
    finally:
        await context.close()


async def api_ms(base: str, key: str, path: str, rounds: int) -> float:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        timings = []
        for _ in range(rounds):
            began = time.perf_counter()
            response = await client.get(path)
            response.raise_for_status()
            timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)


async def run(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="fleet-bench-dashboard-"))
    server_dsn = start_embedded(data_dir, tuning={"fsync": "off", "synchronous_commit": "off"})
    name = f"fleet_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'create database "{name}"')
    dsn = urlunsplit(urlsplit(server_dsn)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    await conn.close()
    db = await Database.connect(dsn, min_size=2, max_size=10)
    began = time.perf_counter()
    small_key = await seed(db, "small", args.baseline_devices)
    big_key = await seed(db, "big", args.devices)
    async with db.system_tx() as tx:
        await tx.execute("analyze")
    print(f"seeded {args.baseline_devices:,} + {args.devices:,} devices in {time.perf_counter() - began:.1f} s")
    port = 18000 + uuid.uuid4().int % 1000
    app = create_app(db, HttpSettings(port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    server.install_signal_handlers = lambda: None
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        for label, key in (("baseline", small_key), ("city", big_key)):
            overview = await api_ms(base, key, "/api/v1/overview", 5)
            whole_city = await api_ms(base, key, "/api/v1/map?bbox=126.7,37.4,127.3,37.75&zoom=11", 5)
            print(f"{label:8}  GET /api/v1/overview {overview:7.1f} ms   GET /api/v1/map (whole city, zoom 11) "
                  f"{whole_city:7.1f} ms   (medians of 5)")
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            results: dict[str, list[tuple[float, float | None]]] = {"baseline": [], "city": []}
            await first_paint(browser, base, small_key)  # warm the server's caches and the browser
            for _ in range(args.rounds):  # interleaved, so both see the same machine
                results["baseline"].append(await first_paint(browser, base, small_key))
                results["city"].append(await first_paint(browser, base, big_key))
            await browser.close()
        medians = {}
        for label, devices in (("baseline", args.baseline_devices), ("city", args.devices)):
            painted = [p for p, _ in results[label]]
            fcps = [f for _, f in results[label] if f is not None]
            medians[label] = statistics.median(painted)
            print(f"{label:8}  {devices:>7,} devices: control room painted median {medians[label]:6.0f} ms, "
                  f"max {max(painted):6.0f} ms; first contentful paint median "
                  f"{statistics.median(fcps) if fcps else float('nan'):5.0f} ms  ({args.rounds} rounds)")
        print(f"ratio city/baseline (painted, medians): {medians['city'] / medians['baseline']:.2f}; "
              f"target: <= 2000 ms at {args.devices:,} devices")
    finally:
        server.should_exit = True
        await serving
        await db.close()
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--baseline-devices", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=7)
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
