"""The demo's collection over the real REST API: the set-up seeded once however often the demo
starts; a plan whose routes go to the demo's crew; its truck driving them and emptying the bins."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from uuid import UUID
from zoneinfo import ZoneInfo

from simulators import inventory
from simulators.rest import FleetApi
from simulators.seed_collection import (CAPACITY_LITRES, DEPOTS, DISPOSAL_SITES, DemoPlan, plan_day, plan_lines,
                                        run_demo_collection, school_district, seed_collection_setup, vehicle_name)
from tests.api.workorder_helpers import add_crew
from tests.simulators.conftest import eventually

C = "/api/v1/collection"
SEOUL = ZoneInfo("Asia/Seoul")


def test_the_plan_is_for_today_in_the_morning_and_for_tomorrow_later():
    assert plan_day(datetime(2026, 12, 7, 7, 30, tzinfo=SEOUL)) == date(2026, 12, 7)
    assert plan_day(datetime(2026, 12, 7, 14, 0, tzinfo=SEOUL)) == date(2026, 12, 7)  # the shift runs to 22:00
    assert plan_day(datetime(2026, 12, 7, 19, 0, tzinfo=SEOUL)) == date(2026, 12, 8)


def test_the_school_street_is_where_most_bins_stand():
    bins = [{"district": d} for d in ("Mapo-gu", "Jung-gu", "Jung-gu", "Mapo-gu", "Guro-gu", None)]
    assert school_district(bins) == "Jung-gu"  # a tie goes by name
    assert school_district([]) is None


def test_plan_lines_name_the_crews_routes_and_the_map():
    plan = DemoPlan("p-1", date(2026, 12, 8), 3, 41, 2, 3, "r-1", datetime(2026, 12, 7, 21, 0, tzinfo=ZoneInfo("UTC")))
    text = plan_lines(plan, SEOUL)
    assert "plan p-1 for 2026-12-08: 3 routes, 41 bins, 2 bins left out" in text
    assert "its truck drives from 2026-12-08 06:00 KST" in text
    assert 'curl -H "Authorization: Bearer $CREW_KEY" "$FLEET_URL/api/v1/routes?assigned_to=me"' in text
    assert "/api/v1/collection/plans/p-1?format=geojson" in text
    assert "format=geojson" not in plan_lines(DemoPlan(None, plan.day, 3, 41, 0, 0, "r-1"))


def test_the_demo_banner_says_collection_follows():
    from api.commands import demo_banner
    from simulators.seed import DEMO_CREW, DemoCity

    seeded = DemoCity(SimpleNamespace(name="Seoul", slug="seoul", allow_nosec_devices=True), "a", 0, DEMO_CREW, "c", crew_id="crew-1")
    assert "Collection:" in demo_banner(seeded, "http://127.0.0.1:8000", 5683)


async def test_the_set_up_is_seeded_once_over_rest(seoul, api_url, tmp_path):
    specs = inventory.plan(seoul.slug, "waste_bin", range(1, 13), seed=5)
    async with FleetApi(api_url, seoul.key) as api:
        await api.import_devices(specs)
        first = await seed_collection_setup(api)
        again = await seed_collection_setup(api)
    kinds = sorted({s.attributes["waste_kind"] for s in specs})
    assert (first.depots, first.disposal_sites, first.vehicles) == (2, 3, len(kinds))
    assert first.created == 2 + 3 + len(kinds) + 1 and again.created == 0  # a restart finds them by name
    client = seoul.client
    vehicles = (await client.get(f"{C}/vehicles")).json()
    assert sorted(v["name"] for v in vehicles) == sorted(vehicle_name(k) for k in kinds)
    assert {v["waste_kind"]: v["capacity_litres"] for v in vehicles} == {k: CAPACITY_LITRES[k] for k in kinds}
    assert {v["depot_id"] for v in vehicles} <= {d["id"] for d in (await client.get(f"{C}/depots")).json()}
    assert sorted(s["name"] for s in (await client.get(f"{C}/disposal-sites")).json()) == sorted(
        s["name"] for s in DISPOSAL_SITES)
    assert len((await client.get(f"{C}/depots")).json()) == len(DEPOTS)
    windows = (await client.get(f"{C}/time-windows")).json()
    assert [(w["district"], w["starts"], w["ends"]) for w in windows] == [(first.school_district, "08:00", "09:00")]
    assert (await client.get(f"{C}/settings")).json()["time_limit_s"] == 10



async def test_the_demo_plans_a_day_with_a_reload_and_hands_its_routes_to_the_crew(db, seoul, api_url):
    crew = await add_crew(seoul, "Demo crew")
    # Nine organic bins nearly full: more than the small organic truck carries in one go.
    for n in range(9):
        device = await seoul.client.post("/api/v1/devices", json={
            "kind": "waste_bin", "endpoint": f"demo-bin-{n}", "district": "Jung-gu",
            "location": {"lat": 37.560 + 0.002 * n, "lon": 126.990 + 0.001 * n},
            "capacity_litres": 240, "waste_kind": "organic"})
        assert device.status_code == 201, device.text
        async with db.system_tx() as conn:
            await conn.execute(
                "insert into device_state (device_id, path, tenant_id, time, v_num) values ($1, $2, $3, now(), 92)",
                UUID(device.json()["id"]), "/3435/0/2", seoul.tenant_id)
    day = datetime.now(SEOUL).date() + timedelta(days=1)
    printed: list[str] = []
    task = asyncio.create_task(run_demo_collection(
        api_url, seoul.key, crew["id"], "Asia/Seoul", settle_s=0, every_s=3600, time_limit_s=1,
        day=day, out=lambda text, flush=False: printed.append(text)))
    try:
        await eventually(lambda: printed, timeout_s=60)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert f"for {day}: 1 route, 9 bins, 0 bins left out" in printed[0], printed
    routes = (await seoul.client.get("/api/v1/routes", params={"date": day.isoformat()})).json()["items"]
    assert [(r["crew_id"], r["status"], r["waste_kind"]) for r in routes] == [(crew["id"], "assigned", "organic")]
    stops = (await seoul.client.get(f"/api/v1/routes/{routes[0]['id']}")).json()["stops"]
    # 9 x ~220 L in an 800 L truck: it unloads mid-route at a site that takes organic waste.
    unloads = [s for s in stops[:-1] if s["kind"] == "disposal"]
    assert unloads and all(s["load_after"] <= CAPACITY_LITRES["organic"] for s in stops)
