"""Waste collection end to end, over real UDP and real HTTP against real PostgreSQL: simulated bins
(real LwM2M, emptied only by Fleet's routes) report their fill; the city sets up over REST and
plans the day (a small truck unloads mid-route, a bin no truck can take is listed, a bin in
maintenance is never planned); a crew drives the route (the bins hear the "emptied" Execute, a
damaged bin opens one work order, a bin's own fill drop completes its stop through the
scheduler's job); a re-plan mid-shift keeps what is done and takes an overflowing bin; and the
evening's plan is built once by whichever of two nodes leads."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx

from fleet.scheduling.collection import CollectionJobs
from fleet.scheduling.leader import LeaderElection
from simulators import inventory
from simulators.simulation import Simulation
from tests.simulators.conftest import running
from tests.test_crews_day import Street, crew_tablet, eventually, street, work_orders_of  # noqa: F401 - a fixture
from tests.test_firmware_campaign import simulation

C = "/api/v1/collection"
ROUTES = "/api/v1/routes"
SEOUL = ZoneInfo("Asia/Seoul")
FILL = "/3435/0/2"
WAIT_S = 20.0
TRUCK_L = 500  # three full 240-litre bins (216 l each) need an unload mid-route


async def provision_bins(street: Street, tmp_path: Path, kinds: list[str]) -> tuple[Path, dict[str, dict]]:
    """Simulated bins of the given waste kinds (240 litres) imported over REST; the devices file
    naming them, and Fleet's devices by endpoint."""
    specs = inventory.plan(street.city.slug, "waste_bin", range(1, len(kinds) + 1), 5)
    for spec, kind in zip(specs, kinds, strict=True):
        spec.attributes.update(waste_kind=kind, capacity_litres=240)
    body = inventory.import_csv(specs)
    answer = await street.admin.post("/api/v1/devices/import", content=body.encode(),
                                     headers={"Content-Type": "text/csv"})
    assert answer.status_code == 201, answer.text
    path = tmp_path / "devices.csv"
    path.write_text(body)
    answer = await street.admin.get("/api/v1/devices", params={"kind": "waste_bin", "limit": 500})
    return path, {d["endpoint"]: d for d in answer.json()["items"]}


def fill_up(sim: Simulation, endpoint: str, share: float) -> None:
    """The bin fills to `share` of its capacity and says so at once."""
    bin_ = sim.device(endpoint)
    bin_.fill_l, bin_.reading = bin_.capacity_l * share, None
    bin_.link.report_soon()


async def fills(db, devices) -> dict[str, float]:
    """Fleet's latest fill of each device (by id) that reported one."""
    async with db.system_tx() as conn:
        rows = await conn.fetch("select device_id, v_num from device_state where path = $1 "
                                "and device_id = any($2::uuid[])", FILL, [UUID(d["id"]) for d in devices])
    return {str(r["device_id"]): r["v_num"] for r in rows}


async def reported(db, devices, at_least: float) -> bool:
    now = await fills(db, devices)
    return len(now) == len(devices) and all(v >= at_least for v in now.values())


@contextlib.asynccontextmanager
async def scheduler(db, name: str, **jobs) -> AsyncIterator[CollectionJobs]:
    """A node's scheduler leader running the collection jobs (as run_scheduler composes them)."""
    collection = CollectionJobs(db, **({"fill_interval_s": 0.2, "evening_interval_s": 0.2} | jobs))
    task = asyncio.create_task(LeaderElection(db, name, retry_s=0.1, check_s=0.2).run(collection.lead))
    try:
        yield collection
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def shift_from_now() -> tuple[str, str]:
    """A shift of about a day that began half an hour ago, whatever the hour: planned late in
    the evening, an all-day shift (00:00-23:59) would leave the truck too little of today for the
    route the test expects. A shift ending before it starts runs into the next morning."""
    now = datetime.now(SEOUL)
    if now.hour == 0 and now.minute < 30:
        return "00:00", "23:59:59"
    began = now - timedelta(minutes=30)
    return began.strftime("%H:%M"), (began - timedelta(minutes=1)).strftime("%H:%M")


async def set_up(client: httpx.AsyncClient, centre: tuple[float, float], kind: str,
                 capacity: int = TRUCK_L) -> dict:
    """A depot and a disposal site near the bins, one small truck for `kind`, on shift for about
    a day from now."""
    depot = await client.post(f"{C}/depots", json={"name": "Depot", "location": {"lat": centre[0], "lon": centre[1]}})
    site = await client.post(f"{C}/disposal-sites", json={
        "name": "Transfer station", "location": {"lat": centre[0] + 0.01, "lon": centre[1] + 0.01}})
    assert depot.status_code == 201 and site.status_code == 201, (depot.text, site.text)
    truck = await client.post(f"{C}/vehicles", json={
        "name": "Small truck", "waste_kind": kind, "capacity_litres": capacity, "count": 1,
        "depot_id": depot.json()["id"], **dict(zip(("shift_start", "shift_end"), shift_from_now()))})
    assert truck.status_code == 201, truck.text
    return {"depot": depot.json(), "site": site.json(), "vehicle": truck.json()}


async def plan_today(client: httpx.AsyncClient) -> dict:
    today = datetime.now(SEOUL).date()
    answer = await client.post(f"{C}/plans", json={"date": today.isoformat(), "time_limit_s": 1}, timeout=60)
    assert answer.status_code == 201, answer.text
    plan = answer.json()
    assert plan["status"] == "ready", plan["error"]
    return plan


async def mark(tablet: httpx.AsyncClient, route_id: str, stop: dict, expect: int = 200, **body) -> dict:
    answer = await tablet.post(f"{ROUTES}/{route_id}/stops/{stop['id']}", json=body or {"status": "done"})
    assert answer.status_code == expect, answer.text
    return answer.json()


async def emptied_commands(db, device_id: str) -> list[str]:
    async with db.system_tx() as conn:
        return [r["status"] for r in await conn.fetch(
            "select status from commands where device_id = $1 and path = '/3435/0/9'", UUID(device_id))]


async def test_a_crews_day_from_the_bins_fill_to_the_completed_route(db, street, tmp_path):
    kinds = ["inorganic"] * 5 + ["glass", "inorganic"]
    path, devices = await provision_bins(street, tmp_path, kinds)
    endpoints = sorted(devices)
    regular, glass, resting = endpoints[:5], endpoints[5], endpoints[6]
    answer = await street.admin.patch(f"/api/v1/devices/{devices[resting]['id']}", json={"status": "maintenance"})
    assert answer.status_code == 200, answer.text
    config = simulation(street.listener.port, path, {"waste_bin": len(kinds)}, collection="fleet")
    async with running(config) as sim, scheduler(db, "node-a"):
        await eventually(lambda: all(sim.device(e).link.ever_registered for e in endpoints), "the bins registered")
        for endpoint in endpoints:
            fill_up(sim, endpoint, 0.9)
        await eventually(lambda: reported(db, list(devices.values()), 80), "every bin's 90 % over UDP")

        # The forecast shows each bin (its own history is a few readings: it borrows a rate).
        answer = await street.admin.get("/api/v1/bins/forecast")
        assert answer.status_code == 200, answer.text
        forecast = {f["device_id"]: f for f in answer.json()["items"]}
        assert {devices[e]["id"] for e in regular + [glass]} <= set(forecast)
        assert all(forecast[devices[e]["id"]]["fill_now"] >= 80 for e in regular)

        centre = (sum(devices[e]["location"]["lat"] for e in regular) / 5,
                  sum(devices[e]["location"]["lon"] for e in regular) / 5)
        setup = await set_up(street.admin, centre, "inorganic")
        school = devices[regular[0]]["id"]
        window = await street.admin.post(f"{C}/time-windows", json={
            "name": "School street", "starts": "00:00", "ends": "02:00", "device_ids": [school]})
        assert window.status_code == 201, window.text

        plan = await plan_today(street.admin)
        [route] = plan["routes"]
        stops = route["stops"]
        bins = [s for s in stops if s["kind"] == "bin"]
        assert sorted(s["device_id"] for s in bins) == sorted(devices[e]["id"] for e in regular)
        assert all(s["load_after"] <= TRUCK_L for s in stops)
        last_bin = max(i for i, s in enumerate(stops) if s["kind"] == "bin")
        assert any(s["kind"] == "disposal" and s["load_after"] == 0 for s in stops[:last_bin]), stops
        school_stop = next(s for s in bins if s["device_id"] == school)
        assert datetime.fromisoformat(school_stop["arrival"]).astimezone(SEOUL).hour >= 2
        assert {u["device_id"]: u["reason"] for u in plan["unassigned"]} == {devices[glass]["id"]: "no_vehicle"}
        assert devices[resting]["id"] not in {s["device_id"] for s in bins}

        geo = await street.admin.get(f"{C}/plans/{plan['id']}", params={"format": "geojson"})
        assert geo.status_code == 200 and geo.headers["content-type"].startswith("application/geo+json")
        assert [f["geometry"]["type"] for f in geo.json()["features"]].count("Point") == len(stops)
        printed = await street.admin.get(f"{C}/plans/{plan['id']}", params={"format": "csv"})
        assert printed.status_code == 200 and len(list(csv.DictReader(io.StringIO(printed.text)))) == len(stops)

        crew, tablet = await crew_tablet(street, "Jung-gu collection crew")
        async with tablet:
            assigned = await street.admin.post(f"{ROUTES}/{route['id']}/assign", json={"crew_id": crew["id"]})
            assert assigned.status_code == 200, assigned.text
            mine = (await tablet.get(ROUTES, params={"assigned_to": "me"})).json()["items"]
            assert [r["id"] for r in mine] == [route["id"]]
            by_device = {s["device_id"]: s for s in bins}
            endpoint_of = {devices[e]["id"]: e for e in regular}
            crew_done, damaged, left_alone = bins[:3], bins[3], bins[4]

            for stop in stops:
                if stop["kind"] == "disposal":
                    await mark(tablet, route["id"], stop)
            for stop in crew_done:
                await mark(tablet, route["id"], stop)
            # Each bin the crew marked hears the "emptied" Execute over UDP and reports its drop.
            done_ids = [s["device_id"] for s in crew_done]
            try:
                await eventually(lambda: all(sim.device(endpoint_of[d]).fill_percentage() < 10 for d in done_ids),
                                 "the Execute /3435/0/9 at the bins", WAIT_S)
            except AssertionError as exc:
                async with db.system_tx() as conn:
                    commands = [tuple(r) for r in await conn.fetch(
                        "select device_id, status, attempts, error, created_at, sent_at from commands")]
                raise AssertionError(f"{[sim.device(endpoint_of[d]).fill_percentage() for d in done_ids]} "
                                     f"{commands}") from exc
            for device_id in done_ids:
                async def answered(d=device_id):
                    return await emptied_commands(db, d) == ["succeeded"]
                await eventually(answered, "the Execute answered", WAIT_S)

            async def dropped(ids):
                now = await fills(db, [{"id": d} for d in ids])
                return len(now) == len(ids) and all(v < 20 for v in now.values())
            await eventually(lambda: dropped(done_ids), "the emptied bins' own reports", WAIT_S)

            body = await mark(tablet, route["id"], damaged, status="skipped", reason="damaged")
            again = await mark(tablet, route["id"], damaged, status="skipped", reason="damaged")
            assert again["version"] == body["version"]
            orders = await work_orders_of(street.admin, damaged["device_id"])
            assert [(o["type"], o["status"]) for o in orders] == [("clean_or_repair_bin", "new")]
            assert sim.device(endpoint_of[damaged["device_id"]]).fill_percentage() > 80  # not emptied

            # Nobody marks the last bin: the truck empties it, and its own drop completes the stop.
            assert sim.empty_bin(endpoint_of[left_alone["device_id"]])

            async def completed():
                now = (await tablet.get(f"{ROUTES}/{route['id']}")).json()
                return now if now["status"] == "completed" else None
            final = await eventually(completed, "the stop completed by the bin's fill drop", WAIT_S)
        last = next(s for s in final["stops"] if s["id"] == left_alone["id"])
        assert (last["status"], last["done_source"]) == ("done", "fill")
        assert await emptied_commands(db, left_alone["device_id"]) == []  # nobody told it: it told Fleet
        assert final["bins_emptied"] == 4 and final["actual_km"] > 0 and final["finished_at"]
        assert next(s for s in final["stops"] if s["id"] == by_device[damaged["device_id"]]["id"])["skip_reason"] \
            == "damaged"
        assert len(await work_orders_of(street.admin, damaged["device_id"])) == 1
        async with db.system_tx() as conn:
            sources = sorted(r["source"] for r in await conn.fetch(
                "select source from bin_emptyings where stop_id is not null"))
        assert sources == ["drop", "stop", "stop", "stop"]
        assert setup["vehicle"]["capacity_litres"] == TRUCK_L


async def overflow_alarm(admin: httpx.AsyncClient, device_id: str) -> dict | None:
    answer = await admin.get("/api/v1/alarms", params={"device": device_id, "type": "bin_overflow",
                                                        "status": "open"})
    assert answer.status_code == 200, answer.text
    return (answer.json()["items"] or [None])[0]


async def test_a_re_plan_mid_shift_keeps_what_is_done_and_takes_an_overflowing_bin(db, street, tmp_path):
    path, devices = await provision_bins(street, tmp_path, ["inorganic"] * 5)
    endpoints = sorted(devices)
    due, quiet = endpoints[:4], endpoints[4]
    config = simulation(street.listener.port, path, {"waste_bin": 5}, collection="fleet")
    async with running(config) as sim, scheduler(db, "node-a"):
        await eventually(lambda: all(sim.device(e).link.ever_registered for e in endpoints), "the bins registered")
        for endpoint in endpoints:
            fill_up(sim, endpoint, 0.9 if endpoint in due else 0.02)
        await eventually(lambda: reported(db, [devices[e] for e in due], 80), "the due bins' 90 %")
        await eventually(lambda: fills(db, [devices[quiet]]), "the quiet bin's fill")
        centre = (devices[due[0]]["location"]["lat"], devices[due[0]]["location"]["lon"])
        await set_up(street.admin, centre, "inorganic", capacity=100_000)
        first = await plan_today(street.admin)
        [route] = first["routes"]
        assert devices[quiet]["id"] not in {s["device_id"] for s in route["stops"]}

        crew, tablet = await crew_tablet(street, "Jung-gu collection crew")
        async with tablet:
            assert (await street.admin.post(f"{ROUTES}/{route['id']}/assign", json={"crew_id": crew["id"]})
                    ).status_code == 200
            bins = [s for s in route["stops"] if s["kind"] == "bin"]
            for stop in bins[:2]:
                await mark(tablet, route["id"], stop)
            before = (await tablet.get(f"{ROUTES}/{route['id']}")).json()

            # The quiet bin overflows (the simulator's fault): Fleet's rules raise the alarm.
            sim.device(endpoints[4]).strike("overflow")
            await eventually(lambda: overflow_alarm(street.admin, devices[quiet]["id"]), "the overflow alarm")
            answer = await street.admin.post(f"{C}/plans/{first['id']}/replan", json={"time_limit_s": 1}, timeout=60)
            assert answer.status_code == 201, answer.text
            plan = answer.json()
            assert (plan["status"], plan["replaces_id"]) == ("ready", first["id"]), plan["error"]
            [new_route] = plan["routes"]
            assert (new_route["crew_id"], new_route["status"]) == (crew["id"], "in_progress")
            def as_done(stop: dict) -> tuple:
                return (stop["device"]["id"], *(stop[k] for k in (
                    "seq", "status", "arrival", "load_after", "done_at", "done_source", "done_by")))
            done = [s for s in before["stops"] if s["status"] == "done"]
            new_stops = (await tablet.get(f"{ROUTES}/{new_route['id']}")).json()["stops"]
            assert [as_done(s) for s in new_stops[:2]] == [as_done(s) for s in done]
            assert devices[quiet]["id"] in {s["device"]["id"] for s in new_stops[2:] if s["device"]}
            assert sorted(s["device_id"] for s in plan["routes"][0]["stops"] if s["kind"] == "bin") == sorted(
                [devices[e]["id"] for e in due] + [devices[quiet]["id"]])
            old = (await street.admin.get(f"{C}/plans/{first['id']}")).json()
            assert old["status"] == "superseded"

            # The tablet still showing the old route: a mark there is refused, naming the new route.
            refused = await tablet.post(f"{ROUTES}/{route['id']}/stops/{bins[2]['id']}", json={"status": "done"})
            assert refused.status_code == 409 and new_route["id"] in refused.json()["detail"], refused.text
            mine = (await tablet.get(ROUTES, params={"assigned_to": "me"})).json()["items"]
            assert [r["id"] for r in mine] == [new_route["id"]]
            synced = (await tablet.get("/api/v1/sync")).json()
            assert [r["id"] for r in synced.get("routes", [])] == [new_route["id"]], synced.get("routes")
            same_bin = next(s for s in new_stops if s["device"] and s["device"]["id"] == bins[2]["device_id"])
            body = await mark(tablet, new_route["id"], same_bin)
            assert next(s for s in body["stops"] if s["id"] == same_bin["id"])["status"] == "done"


async def scheduled_plans(db) -> list[tuple]:
    async with db.system_tx() as conn:
        return [tuple(r) for r in await conn.fetch(
            "select id, date, status from collection_plans where source = 'schedule' order by created_at")]


async def test_the_evening_plan_is_built_once_by_whichever_of_two_nodes_leads(db, street, tmp_path):
    path, devices = await provision_bins(street, tmp_path, ["inorganic"] * 3)
    config = simulation(street.listener.port, path, {"waste_bin": 3}, collection="fleet")
    today = datetime.now(SEOUL).date()
    moment = [datetime(today.year, today.month, today.day, 18, 29, tzinfo=SEOUL).astimezone(UTC)]
    async with running(config) as sim:
        await eventually(lambda: all(sim.device(e).link.ever_registered for e in devices), "the bins registered")
        for endpoint in devices:
            fill_up(sim, endpoint, 0.9)
        await eventually(lambda: reported(db, list(devices.values()), 80), "every bin's 90 % over UDP")
        first = next(iter(devices.values()))["location"]
        await set_up(street.admin, (first["lat"], first["lon"]), "inorganic", capacity=100_000)
        answer = await street.admin.patch(f"{C}/settings", json={"plan_at": "18:30", "time_limit_s": 1})
        assert answer.status_code == 200, answer.text

        async with scheduler(db, "node-a", clock=lambda: moment[0]), \
                scheduler(db, "node-b", clock=lambda: moment[0]):
            await asyncio.sleep(1)  # passes before the city's evening build nothing
            assert await scheduled_plans(db) == []
            moment[0] += timedelta(minutes=2)  # 18:31 in Seoul
            async def ready() -> list[tuple]:
                return [p for p in await scheduled_plans(db) if p[2] != "solving"]
            [(plan_id, day, status)] = await eventually(ready, "the evening's plan", WAIT_S)
            await asyncio.sleep(1.5)  # several more passes of both nodes
            assert await scheduled_plans(db) == [(plan_id, day, status)]
        assert (day, status) == (today + timedelta(days=1), "ready")
        plan = (await street.admin.get(f"{C}/plans/{plan_id}")).json()
        assert plan["source"] == "schedule" and sorted(
            s["device_id"] for r in plan["routes"] for s in r["stops"] if s["kind"] == "bin") == sorted(
            d["id"] for d in devices.values())
