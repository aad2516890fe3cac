"""`python -m bench.dashboard`: the control room's first paint in Debian's Chromium with
100,000 devices in the city, beside the same page for a city of 1,000 in the same run (the
ratio is the result), and the API calls it waits for. Both cities light their streets as a
city does: calendars on most districts and a main road, lamps of 60-150 W.

Each figure comes cold (the city's first on a Fleet process just started: its per-city caches
of tonight's energy and the district outlines empty) and warm (medians of later rounds).

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import uvicorn
from playwright.async_api import async_playwright

from api.app import create_app
from fleet.access.models import Principal, Role
from fleet.access.service import ApiKeyService, TenantService, system_principal
from fleet.lighting.service import LightingService
from fleet.logging import configure_logging
from fleet.db import Database
from fleet.db.embedded import start_embedded
from fleet.db.migrate import migrate
from fleet.settings import HttpSettings, LogSettings

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
# A city's lighting as cities set it up: main roads burn brighter and longer than residential
# streets, both follow the sun, and weekend nights run a little later.
PROGRAMS = {
    "residential": [{"anchor": "sunset", "offset_minutes": 10, "dimming_level": 80},
                    {"anchor": "local_time", "local_time": "23:00", "dimming_level": 50},
                    {"anchor": "local_time", "local_time": "05:00", "dimming_level": 70},
                    {"anchor": "sunrise", "offset_minutes": -10, "dimming_level": 0}],
    "residential-weekend": [{"anchor": "sunset", "offset_minutes": 10, "dimming_level": 80},
                            {"anchor": "local_time", "local_time": "01:00", "dimming_level": 50},
                            {"anchor": "sunrise", "offset_minutes": -10, "dimming_level": 0}],
    "arterial": [{"anchor": "sunset", "dimming_level": 100},
                 {"anchor": "local_time", "local_time": "00:30", "dimming_level": 70},
                 {"anchor": "sunrise", "dimming_level": 0}],
}
# Districts left without a calendar: their lights burn dusk to dawn (a city mid-rollout).
UNSCHEDULED = DISTRICTS[-3:]
ARTERIAL = DISTRICTS[:6]


async def seed(db: Database, slug: str, devices: int) -> str:
    """A city of `devices` devices (lights, bins, access points; mostly online, some offline
    or in maintenance, 1 % with an active alarm), set in with one statement each."""
    tenant = await TenantService(db).create(slug, slug.title(), "Asia/Seoul", allow_nosec_devices=True)
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
        # Lamps of 60, 100 and 150 W, as a city's mix of side streets and main roads.
        await conn.execute(
            """update devices set attributes = attributes || jsonb_build_object(
                   'nominal_wattage', (array[60, 100, 150])[1 + seq % 3])
               where tenant_id = $1 and kind = 'streetlight'""", tenant.id)
        # One main road as a static group (a band of lights across the city) on its own calendar.
        road = await conn.fetchval(
            "insert into device_groups (tenant_id, name) values ($1, 'main road') returning id", tenant.id)
        await conn.execute(
            """insert into device_group_members (tenant_id, group_id, device_id)
               select tenant_id, $2, id from devices
               where tenant_id = $1 and kind = 'streetlight' and lat between 37.565 and 37.57""", tenant.id, road)
    await seed_lighting(db, system_principal(tenant), road)
    return issued.secret


async def seed_lighting(db: Database, principal: Principal, road: uuid.UUID) -> None:
    """Programs and calendars through the lighting service; a calendar for most districts and the main road."""
    lighting = LightingService(db)
    made = {name: (await lighting.create_program(principal, {"name": name, "switch_points": points})).id
            for name, points in PROGRAMS.items()}
    residential = await lighting.create_calendar(principal, {
        "name": "residential", "default_program_id": str(made["residential"]),
        "rules": [{"id": "weekend", "program_id": str(made["residential-weekend"]), "weekdays": [5, 6]}]})
    arterial = await lighting.create_calendar(principal, {
        "name": "arterial", "default_program_id": str(made["arterial"])})
    for district in DISTRICTS:
        if district not in UNSCHEDULED:
            calendar = arterial if district in ARTERIAL else residential
            await lighting.assign(principal, {"calendar_id": str(calendar.id), "district": district})
    await lighting.assign(principal, {"calendar_id": str(arterial.id), "group_id": str(road)})


async def first_paint(browser, base: str, key: str, maps: list[str] | None = None) -> tuple[float, float | None]:
    """(ms to the control room painted, ms to the first contentful paint) in a fresh context;
    the map views the page asks for are added to `maps`."""
    async with httpx.AsyncClient(base_url=base) as client:
        signed = await client.post("/session", data={"key": key})
        cookie = signed.cookies["fleet_session"]
    context = await browser.new_context(viewport={"width": 1600, "height": 900})
    try:
        await context.add_cookies([{"name": "fleet_session", "value": cookie, "url": base}])
        page = await context.new_page()
        if maps is not None:
            page.on("request", lambda r: maps.append(urlsplit(r.url).path + "?" + urlsplit(r.url).query)
                    if urlsplit(r.url).path == "/api/v1/map" else None)
        await page.goto(f"{base}/")
        await page.wait_for_selector("[data-painted='true']", state="attached", timeout=60_000)
        painted = await page.evaluate(f"performance.getEntriesByName('{PAINTED}')[0].startTime")
        fcp = await page.evaluate(
            "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime ?? null")
        return painted, fcp
    finally:
        await context.close()


async def timed_ms(client: httpx.AsyncClient, path: str) -> float:
    began = time.perf_counter()
    response = await client.get(path)
    response.raise_for_status()
    return (time.perf_counter() - began) * 1000


async def api_ms(base: str, key: str, path: str, rounds: int) -> float:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        return statistics.median([await timed_ms(client, path) for _ in range(rounds)])


@asynccontextmanager
async def serving(dsn: str) -> AsyncIterator[str]:
    """A Fleet API process of its own (fresh caches, fresh pool) on a free port; yields its base URL."""
    db = await Database.connect(dsn, min_size=2, max_size=10)
    port = 18000 + uuid.uuid4().int % 1000
    server = uvicorn.Server(uvicorn.Config(create_app(db, HttpSettings(port=port)), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False, lifespan="on"))
    server.install_signal_handlers = lambda: None
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await db.close()


async def paints(args: argparse.Namespace, dsn: str, keys: dict[str, str]) -> str:
    """First paints: each city's first on a server just started, then warm rounds; returns the
    map view the big city's control room opened at."""
    async with serving(dsn) as base, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        # Warm the browser (and the static files) with the sign-in page: no city's figures asked.
        context = await browser.new_context()
        await (await context.new_page()).goto(f"{base}/")
        await context.close()
        maps: list[str] = []
        cold = {"city": await first_paint(browser, base, keys["city"], maps),
                "baseline": await first_paint(browser, base, keys["baseline"])}
        results: dict[str, list[tuple[float, float | None]]] = {"baseline": [], "city": []}
        for _ in range(args.rounds):  # interleaved, so both see the same machine
            results["baseline"].append(await first_paint(browser, base, keys["baseline"]))
            results["city"].append(await first_paint(browser, base, keys["city"]))
        await browser.close()
    medians = {}
    for label, devices in (("baseline", args.baseline_devices), ("city", args.devices)):
        painted = [p for p, _ in results[label]]
        fcps = [f for _, f in results[label] if f is not None]
        medians[label] = statistics.median(painted)
        print(f"{label:8}  {devices:>7,} devices: control room painted cold {cold[label][0]:6.0f} ms; warm median "
              f"{medians[label]:6.0f} ms, max {max(painted):6.0f} ms; first contentful paint median "
              f"{statistics.median(fcps) if fcps else float('nan'):5.0f} ms  ({args.rounds} rounds)")
    print(f"ratio city/baseline (painted, warm medians): {medians['city'] / medians['baseline']:.2f}; "
          f"cold: {cold['city'][0] / cold['baseline'][0]:.2f}; target: <= 2000 ms at {args.devices:,} devices")
    return maps[0]


async def calls(dsn: str, keys: dict[str, str], opening: str) -> None:
    """The API calls the control room waits for: the first of each on a server just started, then warm."""
    paths = {"overview": "/api/v1/overview", "districts": "/api/v1/map/districts", "map (opening view)": opening,
             "map (whole city, zoom 11)": "/api/v1/map?bbox=126.7,37.4,127.3,37.75&zoom=11"}
    print(f"the control room opens its map at {opening}")
    async with serving(dsn) as base:
        for label, key in keys.items():
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"},
                                         timeout=120) as client:
                cold = {name: await timed_ms(client, path) for name, path in paths.items()}
            for name, path in paths.items():
                warm = await api_ms(base, key, path, 5)
                print(f"{label:8}  GET {name:26} cold {cold[name]:7.1f} ms   warm {warm:7.1f} ms (median of 5)")


async def run(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="fleet-bench-dashboard-"))
    server_dsn = start_embedded(data_dir, tuning={"fsync": "off", "synchronous_commit": "off"})
    name = f"fleet_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'create database "{name}"')
    dsn = urlunsplit(urlsplit(server_dsn)._replace(path=f"/{name}"))
    try:
        owner = await asyncpg.connect(dsn)
        await migrate(owner)
        db = await Database.connect(dsn, min_size=2, max_size=10)
        began = time.perf_counter()
        keys = {"baseline": await seed(db, "small", args.baseline_devices), "city": await seed(db, "big", args.devices)}
        await db.close()
        # As the admin: Fleet's own logins own no table, and ANALYZE skips tables it does not own.
        await owner.execute("analyze")
        await owner.close()
        print(f"seeded {args.baseline_devices:,} + {args.devices:,} devices in {time.perf_counter() - began:.1f} s")
        opening = await paints(args, dsn, keys)
        await calls(dsn, keys, opening)
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--baseline-devices", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=7)
    configure_logging(LogSettings(level="WARNING", format="console"))
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
