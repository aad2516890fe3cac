"""Pickup plans over real HTTP with the real solver: a truck that must unload mid-route, a bin too
big for any truck, a bin under maintenance never planned, a time window honoured, GeoJSON and CSV,
and a re-plan mid-shift that never moves a done stop."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.service import AlarmService
from tests.test_collection_day import shift_from_now

C = "/api/v1/collection"
SEOUL = ZoneInfo("Asia/Seoul")
FILL = "/3435/0/2"


async def add_bin(city, n: int, lat: float, lon: float, *, capacity: int = 240, kind: str = "inorganic",
                  status: str | None = None) -> str:
    body = {"kind": "waste_bin", "endpoint": f"{city.slug}-bin-{n}", "location": {"lat": lat, "lon": lon},
            "capacity_litres": capacity, "waste_kind": kind, "district": "Jung-gu"}
    if status:
        body["status"] = status
    response = await city.client.post("/api/v1/devices", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def fill(db, city, device_id: str, percent: float) -> None:
    async with db.system_tx() as conn:
        await conn.execute(
            """insert into device_state (device_id, path, tenant_id, time, v_num) values ($1, $2, $3, now(), $4)
               on conflict (device_id, path) do update set v_num = excluded.v_num, time = excluded.time""",
            UUID(device_id), FILL, city.tenant_id, percent)


async def set_up(city, *, capacity: int, shift=("06:00", "14:00")) -> dict:
    client = city.client
    depot = (await client.post(f"{C}/depots", json={"name": "Depot", "location": {"lat": 37.50, "lon": 127.00}})).json()
    site = (await client.post(f"{C}/disposal-sites", json={
        "name": "Transfer station", "location": {"lat": 37.52, "lon": 127.02}, "waste_kinds": ["inorganic"]})).json()
    vehicle = await client.post(f"{C}/vehicles", json={
        "name": "Small truck", "waste_kind": "inorganic", "capacity_litres": capacity, "count": 1,
        "depot_id": depot["id"], "shift_start": shift[0], "shift_end": shift[1]})
    assert vehicle.status_code == 201, vehicle.text
    return {"depot": depot, "site": site, "vehicle": vehicle.json()}


def tomorrow() -> date:
    return datetime.now(SEOUL).date() + timedelta(days=1)


async def test_a_plan_reloads_mid_route_lists_what_cannot_fit_and_honours_time_windows(db, seoul, busan):
    setup = await set_up(seoul, capacity=1000)
    full = [await add_bin(seoul, i, 37.50 + 0.002 * i, 127.00 + 0.001 * i) for i in range(6)]
    for device in full:
        await fill(db, seoul, device, 90)   # 216 litres each: 1296 in all, a 1000-litre truck unloads once
    huge = await add_bin(seoul, 10, 37.505, 127.005, capacity=1100)
    await fill(db, seoul, huge, 95)
    resting = await add_bin(seoul, 11, 37.506, 127.006, status="maintenance")
    await fill(db, seoul, resting, 99)
    silent = await add_bin(seoul, 12, 37.507, 127.007)
    light = await add_bin(seoul, 13, 37.508, 127.008)
    await fill(db, seoul, light, 10)
    school = await add_bin(seoul, 14, 37.509, 127.009)
    await fill(db, seoul, school, 85)
    window = await seoul.client.post(f"{C}/time-windows", json={
        "name": "School street", "starts": "06:00", "ends": "10:00", "device_ids": [school]})
    assert window.status_code == 201, window.text

    day = tomorrow()
    created = await seoul.client.post(f"{C}/plans", json={"date": day.isoformat(), "time_limit_s": 1}, timeout=60)
    assert created.status_code == 201, created.text
    plan = created.json()
    assert plan["status"] == "ready", plan["error"]
    assert (plan["date"], plan["source"], plan["waste_kind"]) == (day.isoformat(), "api", None)

    [route] = plan["routes"]
    assert route["vehicle_id"] == setup["vehicle"]["id"] and route["distance_m"] > 0 and route["duration_s"] > 0
    stops = route["stops"]
    assert [s["seq"] for s in stops] == list(range(len(stops)))
    bins = [s for s in stops if s["kind"] == "bin"]
    assert sorted(s["device_id"] for s in bins) == sorted([*full, school])
    assert all(s["load_after"] <= 1000 for s in stops)
    # A disposal stop between bins: the truck unloads mid-route, empty after it.
    last_bin = max(i for i, s in enumerate(stops) if s["kind"] == "bin")
    unloads = [s for s in stops[:last_bin] if s["kind"] == "disposal"]
    assert unloads and all(s["disposal_site_id"] == setup["site"]["id"] and s["device_id"] is None
                           and s["load_after"] == 0 for s in unloads)
    arrivals = [datetime.fromisoformat(s["arrival"]) for s in stops]
    assert arrivals == sorted(arrivals)
    school_stop = next(s for s in bins if s["device_id"] == school)
    assert datetime.fromisoformat(school_stop["arrival"]).astimezone(SEOUL).hour >= 10
    assert all(datetime.fromisoformat(s["arrival"]).astimezone(SEOUL).date() == day for s in stops)

    reasons = {u["device_id"]: u["reason"] for u in plan["unassigned"]}
    assert reasons == {huge: "too_large", silent: "no_fill_reading"}
    planned = {s["device_id"] for s in bins} | set(reasons)
    assert resting not in planned and light not in planned
    summary = plan["summary"]
    assert (summary["must_collect"], summary["stops"], summary["unassigned"]) == (8, 7, 2)
    assert summary["reloads"] >= 1 and summary["fixed_round_stops"] == 5.0  # 10 bins in service, every 2 days
    assert summary["fixed_round_km"] > 0 and "km_saved" in summary

    fetched = await seoul.client.get(f"{C}/plans/{plan['id']}")
    assert fetched.status_code == 200 and fetched.json() == plan
    listed = (await seoul.client.get(f"{C}/plans", params={"date": day.isoformat()})).json()
    assert [p["id"] for p in listed] == [plan["id"]]
    assert (await busan.client.get(f"{C}/plans/{plan['id']}")).status_code == 404
    assert (await busan.client.get(f"{C}/plans")).json() == []

    geo = await seoul.client.get(f"{C}/plans/{plan['id']}", params={"format": "geojson"})
    assert geo.status_code == 200 and geo.headers["content-type"].startswith("application/geo+json")
    features = geo.json()["features"]
    assert geo.json()["type"] == "FeatureCollection"
    [line] = [f for f in features if f["geometry"]["type"] == "LineString"]
    depot = [127.00, 37.50]
    coordinates = line["geometry"]["coordinates"]
    assert coordinates[0] == depot and coordinates[-1] == depot and len(coordinates) == len(stops) + 2
    assert coordinates[1:-1] == [[s["location"]["lon"], s["location"]["lat"]] for s in stops]
    points = [f["properties"] for f in features if f["geometry"]["type"] == "Point"]
    assert [(p["seq"], p["kind"], p["device_id"], p["load_after"]) for p in points] == [
        (s["seq"], s["kind"], s["device_id"], s["load_after"]) for s in stops]
    assert all(p["arrival"] for p in points)

    printed = await seoul.client.get(f"{C}/plans/{plan['id']}", params={"format": "csv"})
    assert printed.status_code == 200 and printed.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(printed.text)))
    assert len(rows) == len(stops)
    assert [(r["seq"], r["kind"], r["device_id"]) for r in rows] == [
        (str(s["seq"]), s["kind"], s["device_id"] or "") for s in stops]
    assert (await seoul.client.get(f"{C}/plans/{plan['id']}", params={"format": "xml"})).status_code == 400

    # A truck used by a plan's route stays.
    assert (await seoul.client.delete(f"{C}/vehicles/{setup['vehicle']['id']}")).status_code == 409
    assert (await seoul.client.delete(f"{C}/disposal-sites/{setup['site']['id']}")).status_code == 409


async def test_a_plan_without_trucks_lists_urgent_bins_and_bad_requests_are_refused(db, seoul):
    urgent = await add_bin(seoul, 1, 37.5, 127.0, kind="glass")
    await fill(db, seoul, urgent, 95)
    plan = await seoul.client.post(f"{C}/plans", json={"date": tomorrow().isoformat()}, timeout=60)
    assert plan.status_code == 201, plan.text
    assert plan.json()["routes"] == [] and plan.json()["unassigned"] == [
        {"device_id": urgent, "reason": "no_vehicle", "detail": "no vehicle collects glass"}]
    for bad in ({"date": "tomorrow"}, {"date": "2026-12-08", "time_limit_s": 0},
                {"date": "2026-12-08", "time_limit_s": 601}, {"date": "2026-12-08", "waste_kind": "lava"}, {}):
        assert (await seoul.client.post(f"{C}/plans", json=bad)).status_code == 400, bad
    assert (await seoul.client.get(f"{C}/plans/{urgent}")).status_code == 404
    assert (await seoul.client.post(f"{C}/plans/{urgent}/replan")).status_code == 404


async def test_a_re_plan_mid_shift_keeps_done_stops_and_takes_new_urgent_bins(db, seoul):
    await set_up(seoul, capacity=100_000, shift=shift_from_now())
    bins = [await add_bin(seoul, i, 37.50 + 0.003 * i, 127.00 + 0.002 * i) for i in range(5)]
    for device in bins:
        await fill(db, seoul, device, 90)
    today = datetime.now(SEOUL).date()
    asked = datetime.now(UTC).replace(microsecond=0)
    first = (await seoul.client.post(f"{C}/plans", json={"date": today.isoformat(), "time_limit_s": 1}, timeout=60)).json()
    assert first["status"] == "ready", first["error"]
    [route] = first["routes"]
    # Today's plan starts its truck now, not at the shift's start in the past.
    assert datetime.fromisoformat(route["starts_at"]) >= asked
    assert all(datetime.fromisoformat(s["arrival"]) >= asked for s in route["stops"])
    assert len(route["stops"]) == 5
    crew = (await seoul.client.post("/api/v1/crews", json={"name": "North team"})).json()
    done = route["stops"][:2]
    async with db.tenant_tx(seoul.tenant_id) as conn:
        await conn.execute("update collection_routes set crew_id = $1, status = 'in_progress' where id = $2",
                           UUID(crew["id"]), UUID(route["id"]))
        await conn.execute(
            """update collection_stops set status = 'done', done_source = 'crew', done_at = now()
               where id = any($1::uuid[])""", [UUID(s["id"]) for s in done])
    # A bin that was not due catches fire: it is urgent now.
    burning = await add_bin(seoul, 9, 37.52, 127.01)
    await fill(db, seoul, burning, 5)
    await AlarmService(db).apply([Finding(seoul.tenant_id, UUID(burning), AlarmType.BIN_FIRE, True,
                                          datetime.now(UTC))])

    replanned = await seoul.client.post(f"{C}/plans/{first['id']}/replan", json={"time_limit_s": 1}, timeout=60)
    assert replanned.status_code == 201, replanned.text
    plan = replanned.json()
    assert (plan["status"], plan["source"], plan["replaces_id"]) == ("ready", "replan", first["id"]), plan["error"]
    [new_route] = plan["routes"]
    assert (new_route["vehicle_id"], new_route["crew_id"], new_route["status"]) == (
        route["vehicle_id"], crew["id"], "in_progress")
    stops = new_route["stops"]
    # The done stops are where they were, done; the rest follow, with the burning bin among them.
    assert [(s["seq"], s["device_id"], s["status"], s["arrival"]) for s in stops[:2]] == [
        (s["seq"], s["device_id"], "done", s["arrival"]) for s in done]
    rest = stops[2:]
    assert [s["seq"] for s in rest] == list(range(2, 2 + len(rest)))
    assert all(s["status"] == "planned" for s in rest)
    assert sorted(s["device_id"] for s in rest if s["kind"] == "bin") == sorted(
        [*(s["device_id"] for s in route["stops"][2:]), burning])
    now = datetime.now(UTC)
    assert all(datetime.fromisoformat(s["arrival"]) >= now - timedelta(minutes=1) for s in rest)

    old = (await seoul.client.get(f"{C}/plans/{first['id']}")).json()
    assert old["status"] == "superseded"
    # A tablet still on the old route is sent to the new one; its mark is not lost on the old copy.
    stale = await seoul.client.post(f"/api/v1/routes/{route['id']}/stops/{route['stops'][2]['id']}",
                                    json={"status": "done"})
    assert stale.status_code == 409 and stale.json()["replaced_by"] == new_route["id"], stale.text
    async with db.tenant_tx(seoul.tenant_id) as conn:
        told = await conn.fetch("""select subject_id, payload->>'status' as status, payload->>'replaced_by' as by
                                   from events where kind = 'plan.updated' order by id""")
    assert [(e["subject_id"], e["status"], e["by"]) for e in told] == [
        (first["id"], "ready", None), (plan["id"], "ready", None), (first["id"], "superseded", plan["id"])]
    # The old route is cancelled, and the tablets' sync hears of it (naming its successor) and of the new one.
    assert (await seoul.client.get(f"/api/v1/routes/{route['id']}")).json()["status"] == "cancelled"
    async with db.tenant_tx(seoul.tenant_id) as conn:
        routes_told = await conn.fetch("""select subject_id, payload->>'status' as status, payload->>'replaced_by' as by
                                          from events where kind = 'route.updated' order by id""")
    assert [(e["subject_id"], e["status"], e["by"]) for e in routes_told] == [
        (route["id"], "cancelled", new_route["id"]), (new_route["id"], "in_progress", None)]
    again = await seoul.client.post(f"{C}/plans/{first['id']}/replan", timeout=60)
    assert again.status_code == 409
    audit = (await seoul.client.get("/api/v1/audit", params={"action": "collection.plan.replan"})).json()["items"]
    assert [e["entity_id"] for e in audit] == [plan["id"]]


async def test_two_re_plans_of_one_plan_at_once_give_one_successor(db, seoul):
    """Two operators (or two nodes) re-plan the same plan at once: one replaces it, the other is
    refused with 409 and kept as a failed plan, so no tablet follows a plan that replaces nothing."""
    import asyncio

    await set_up(seoul, capacity=100_000, shift=shift_from_now())
    for i in range(3):
        await fill(db, seoul, await add_bin(seoul, i, 37.50 + 0.003 * i, 127.00), 90)
    today = datetime.now(SEOUL).date()
    first = (await seoul.client.post(f"{C}/plans", json={"date": today.isoformat(), "time_limit_s": 1}, timeout=60)).json()
    assert first["status"] == "ready", first["error"]
    answers = await asyncio.gather(*(seoul.client.post(f"{C}/plans/{first['id']}/replan", json={"time_limit_s": 1},
                                                       timeout=60) for _ in range(2)))
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    plans = (await seoul.client.get(f"{C}/plans", params={"date": today.isoformat()})).json()
    items = plans["items"] if isinstance(plans, dict) else plans
    assert sorted((p["source"], p["status"]) for p in items) == [
        ("api", "superseded"), ("replan", "failed"), ("replan", "ready")]


async def test_a_night_round_runs_from_the_evening_into_the_next_morning(db, seoul):
    """23:50-06:00: stops between 23:50 on the plan's date and 06:00 the next day, and a window
    of the next morning (a hospital street, quiet 23:00-23:59 and 00:00-02:00) kept free after
    midnight."""
    await set_up(seoul, capacity=5000, shift=("23:50", "06:00"))
    bins = [await add_bin(seoul, i, 37.50 + 0.002 * i, 127.00 + 0.001 * i) for i in range(4)]
    for device in bins:
        await fill(db, seoul, device, 90)
    quiet = await seoul.client.post(f"{C}/time-windows", json={
        "name": "Hospital street at night", "starts": "00:00", "ends": "02:00", "device_ids": [bins[0]]})
    assert quiet.status_code == 201, quiet.text
    late = await seoul.client.post(f"{C}/time-windows", json={
        "name": "Hospital street, late evening", "starts": "23:00", "ends": "23:59", "device_ids": [bins[0]]})
    assert late.status_code == 201, late.text
    day = tomorrow()
    created = await seoul.client.post(f"{C}/plans", json={"date": day.isoformat(), "time_limit_s": 1}, timeout=60)
    assert created.status_code == 201 and created.json()["status"] == "ready", created.text
    [route] = created.json()["routes"]
    evening = datetime.combine(day, datetime.min.time(), SEOUL) + timedelta(hours=23, minutes=50)
    morning = evening + timedelta(hours=6, minutes=10)
    arrivals = {s["device_id"]: datetime.fromisoformat(s["arrival"]) for s in route["stops"] if s["kind"] == "bin"}
    assert set(arrivals) == set(bins)
    assert all(evening <= at <= morning for at in arrivals.values()), arrivals
    # The hospital street's bin only after 02:00 (the truck may take the others before or after).
    assert arrivals[bins[0]] >= evening + timedelta(hours=2, minutes=10), arrivals[bins[0]]
