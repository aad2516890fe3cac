"""Lighting over real HTTP: programs, calendars, assignments, overrides, preview, energy, roles, tenant wall."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import httpx

from fleet.access.models import Role

LIGHTING = "/api/v1/lighting"
KST = ZoneInfo("Asia/Seoul")

EVENING_PROGRAM = {"name": "evening", "switch_points": [
    {"id": "on", "anchor": "local_time", "local_time": "18:00", "dimming_level": 100},
    {"id": "dim", "anchor": "local_time", "local_time": "23:00", "dimming_level": 50},
    {"id": "off", "anchor": "local_time", "local_time": "06:00", "dimming_level": 0}]}
SUN_PROGRAM = {"name": "sun", "description": "dusk to dawn", "switch_points": [
    {"anchor": "sunset", "offset_minutes": 15, "dimming_level": 100},
    {"anchor": "sunrise", "offset_minutes": -15, "dimming_level": 0}]}


def fields_of(response: httpx.Response) -> set[str]:
    return {e["field"] for e in response.json().get("errors", [])}


async def created(response: httpx.Response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


async def light(city, n: int, district: str = "Jung-gu", **fields) -> dict:
    return await created(await city.client.post("/api/v1/devices", json={
        "kind": "streetlight", "endpoint": f"{city.slug}-l{n}", "location": {"lat": 37.56, "lon": 126.97},
        "district": district, "nominal_wattage": 100, **fields}))


async def program(city, body: dict = EVENING_PROGRAM) -> dict:
    return await created(await city.client.post(f"{LIGHTING}/programs", json=body))


async def calendar(city, default_program: dict, **body) -> dict:
    return await created(await city.client.post(f"{LIGHTING}/calendars", json={
        "name": "city", "default_program_id": default_program["id"], **body}))


async def test_program_lifecycle_and_validation(seoul):
    made = await program(seoul, SUN_PROGRAM)
    assert made["switch_points"] == [
        {"id": "p1", "anchor": "sunset", "offset_minutes": 15, "dimming_level": 100},
        {"id": "p2", "anchor": "sunrise", "offset_minutes": -15, "dimming_level": 0}]
    assert (await seoul.client.get(f"{LIGHTING}/programs/{made['id']}")).json() == made

    replaced = await seoul.client.put(f"{LIGHTING}/programs/{made['id']}", json=EVENING_PROGRAM)
    assert replaced.status_code == 200, replaced.text
    assert [p["local_time"] for p in replaced.json()["switch_points"]] == ["18:00", "23:00", "06:00"]
    assert [p["name"] for p in (await seoul.client.get(f"{LIGHTING}/programs")).json()] == ["evening"]

    duplicate = await seoul.client.post(f"{LIGHTING}/programs", json=EVENING_PROGRAM)
    assert duplicate.status_code == 409 and fields_of(duplicate) == {"name"}

    bad = await seoul.client.post(f"{LIGHTING}/programs", json={"name": "bad", "switch_points": [
        {"anchor": "local_time", "local_time": "05:00", "dimming_level": 80},
        {"anchor": "sunset", "dimming_level": 100},
        {"anchor": "local_time", "local_time": "25:00", "dimming_level": 10},
        {"anchor": "sunrise", "offset_minutes": 10, "dimming_level": 101}]})
    assert bad.status_code == 422, bad.text
    assert fields_of(bad) == {"switch_points[2].local_time", "switch_points[3].dimming_level"}
    order = await seoul.client.post(f"{LIGHTING}/programs", json={"name": "bad", "switch_points": [
        {"anchor": "local_time", "local_time": "05:00", "dimming_level": 80},
        {"anchor": "sunset", "dimming_level": 100}]})
    assert order.status_code == 422 and fields_of(order) == {"switch_points"}
    offset = await seoul.client.post(f"{LIGHTING}/programs", json={"name": "bad", "switch_points": [
        {"anchor": "local_time", "local_time": "18:00", "offset_minutes": 5, "dimming_level": 80}]})
    assert offset.status_code == 422 and fields_of(offset) == {"switch_points[0].offset_minutes"}
    empty = await seoul.client.post(f"{LIGHTING}/programs", json={"name": "bad", "switch_points": []})
    assert empty.status_code == 422 and fields_of(empty) == {"switch_points"}
    malformed = await seoul.client.post(f"{LIGHTING}/programs", json={"name": "bad", "switch_points": [
        {"anchor": "noon", "dimming_level": 1}]})
    assert malformed.status_code == 400

    assert (await seoul.client.delete(f"{LIGHTING}/programs/{made['id']}")).status_code == 204
    assert (await seoul.client.get(f"{LIGHTING}/programs/{made['id']}")).status_code == 404


async def test_calendar_rules_round_trip_and_references(seoul):
    evening, sun = await program(seoul), await program(seoul, SUN_PROGRAM)
    rules = [{"id": "new-year", "program_id": sun["id"], "dates": ["2026-12-31", "2027-01-01"]},
             {"id": "winter", "program_id": sun["id"], "date_range": {"first": "12-01", "last": "02-28"}},
             {"id": "festival", "program_id": evening["id"],
              "date_range": {"first": "2026-10-01", "last": "2026-10-05"}, "weekdays": [5, 6]}]
    made = await calendar(seoul, evening, rules=rules, description="the city's")
    assert made["rules"] == rules and made["default_program_id"] == evening["id"]
    # Calendars show times with the city's offset (stored in UTC).
    assert made["created_at"].endswith("+09:00") and made["updated_at"].endswith("+09:00")
    assert (await seoul.client.get(f"{LIGHTING}/calendars")).json()[0]["created_at"] == made["created_at"]

    missing = "00000000-0000-4000-8000-000000000000"
    unknown = await seoul.client.post(f"{LIGHTING}/calendars", json={
        "name": "other", "default_program_id": missing, "rules": [{"program_id": missing, "weekdays": [1]}]})
    assert unknown.status_code == 422 and fields_of(unknown) == {"default_program_id", "rules[0].program_id"}
    invalid = await seoul.client.post(f"{LIGHTING}/calendars", json={
        "name": "other", "default_program_id": evening["id"], "rules": [
            {"program_id": sun["id"]},
            {"program_id": sun["id"], "weekdays": [0, 8]},
            {"program_id": sun["id"], "date_range": {"first": "2026-02-01", "last": "01-05"}},
            {"program_id": sun["id"], "date_range": {"first": "02-30", "last": "03-05"}}]})
    assert invalid.status_code == 422, invalid.text
    assert fields_of(invalid) == {"rules[0].rule", "rules[1].weekdays", "rules[2].date_range",
                                 "rules[3].date_range.first"}

    in_use = await seoul.client.delete(f"{LIGHTING}/programs/{sun['id']}")
    assert in_use.status_code == 409 and "city" in in_use.json()["detail"]
    replaced = await seoul.client.put(f"{LIGHTING}/calendars/{made['id']}", json={
        "name": "city", "default_program_id": evening["id"]})
    assert replaced.status_code == 200 and replaced.json()["rules"] == []
    assert (await seoul.client.delete(f"{LIGHTING}/programs/{sun['id']}")).status_code == 204


async def test_assignments_one_calendar_per_group_or_district(seoul):
    evening = await program(seoul)
    city_calendar = await calendar(seoul, evening)
    group = await created(await seoul.client.post("/api/v1/groups", json={"name": "boulevard"}))
    await light(seoul, 1)   # a district is known by its devices (an unknown one is 422)
    by_group = await created(await seoul.client.post(f"{LIGHTING}/assignments", json={
        "calendar_id": city_calendar["id"], "group_id": group["id"]}))
    by_district = await created(await seoul.client.post(f"{LIGHTING}/assignments", json={
        "calendar_id": city_calendar["id"], "district": "Jung-gu"}))
    assert by_district["district"] == "Jung-gu" and by_district["group_id"] is None
    again = await seoul.client.post(f"{LIGHTING}/assignments", json={
        "calendar_id": city_calendar["id"], "district": "Jung-gu"})
    assert again.status_code == 409
    both = await seoul.client.post(f"{LIGHTING}/assignments", json={
        "calendar_id": city_calendar["id"], "district": "Mapo-gu", "group_id": group["id"]})
    assert both.status_code == 422
    nowhere = await seoul.client.post(f"{LIGHTING}/assignments", json={
        "calendar_id": city_calendar["id"], "group_id": "00000000-0000-4000-8000-000000000000"})
    assert nowhere.status_code == 422 and fields_of(nowhere) == {"group_id"}
    assigned = await seoul.client.delete(f"{LIGHTING}/calendars/{city_calendar['id']}")
    assert assigned.status_code == 409

    other = await calendar(seoul, evening, name="festival")
    moved = await seoul.client.patch(f"{LIGHTING}/assignments/{by_group['id']}", json={"calendar_id": other["id"]})
    assert moved.status_code == 200 and moved.json()["calendar_id"] == other["id"]
    listed = (await seoul.client.get(f"{LIGHTING}/assignments")).json()
    assert [a["id"] for a in listed] == [by_group["id"], by_district["id"]]
    # Deleting the group takes its assignment with it.
    assert (await seoul.client.delete(f"/api/v1/groups/{group['id']}")).status_code == 204
    assert [a["id"] for a in (await seoul.client.get(f"{LIGHTING}/assignments")).json()] == [by_district["id"]]
    assert (await seoul.client.delete(f"{LIGHTING}/assignments/{by_district['id']}")).status_code == 204


async def test_overrides_for_now_cancel_and_validation(seoul):
    lamp = await light(seoul, 1)
    made = await created(await seoul.client.post(f"{LIGHTING}/overrides", json={
        "scope": {"district": "Jung-gu"}, "dimming_level": 100, "duration_s": 7200, "reason": "marathon"}))
    starts, ends = dt.datetime.fromisoformat(made["starts_at"]), dt.datetime.fromisoformat(made["ends_at"])
    assert ends - starts == dt.timedelta(hours=2) and made["active"] and made["priority"] == 0
    later = await created(await seoul.client.post(f"{LIGHTING}/overrides", json={
        "scope": {"device_ids": [lamp["id"]]}, "dimming_level": 30, "priority": 5,
        "starts_at": (starts + dt.timedelta(hours=1)).isoformat(),
        "ends_at": (starts + dt.timedelta(hours=3)).isoformat()}))
    assert not later["active"]

    cancelled = await seoul.client.post(f"{LIGHTING}/overrides/{made['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["cancelled_at"] and not cancelled.json()["active"]
    assert [o["id"] for o in (await seoul.client.get(f"{LIGHTING}/overrides")).json()] == [later["id"]]
    everything = (await seoul.client.get(f"{LIGHTING}/overrides", params={"include_ended": "true"})).json()
    assert [o["id"] for o in everything] == [later["id"], made["id"]]

    for body, bad_fields in [
        ({"scope": {"district": "Jung-gu"}, "dimming_level": 100}, {"ends_at"}),
        ({"scope": {"district": "Jung-gu"}, "dimming_level": 100, "duration_s": 60,
          "ends_at": ends.isoformat()}, {"ends_at"}),
        ({"scope": {}, "dimming_level": 120, "duration_s": 60}, {"scope", "dimming_level"}),
        ({"scope": {"device_ids": ["00000000-0000-4000-8000-000000000000"]}, "dimming_level": 10,
          "duration_s": 60}, {"scope.device_ids"}),
        ({"scope": {"district": "Jung-gu"}, "dimming_level": 10, "ends_at": "2020-01-01T00:00:00+00:00"}, {"ends_at"}),
        ({"scope": {"district": "Jung-gu"}, "dimming_level": 10, "ends_at": "2099-01-01T00:00:00"}, {"ends_at"}),
    ]:
        response = await seoul.client.post(f"{LIGHTING}/overrides", json=body)
        assert response.status_code == 422, (body, response.text)
        assert fields_of(response) == bad_fields, (body, response.text)


async def test_roles_and_the_tenant_wall(city_factory, seoul):
    viewer = await city_factory("daegu", Role.VIEWER)
    assert (await viewer.client.get(f"{LIGHTING}/programs")).json() == []
    assert (await viewer.client.post(f"{LIGHTING}/programs", json=EVENING_PROGRAM)).status_code == 403
    crew = await city_factory("ulsan", Role.CREW)
    assert (await crew.client.post(f"{LIGHTING}/overrides", json={
        "scope": {"district": "x"}, "dimming_level": 1, "duration_s": 60})).status_code == 403

    busan = await city_factory("busan")
    evening = await program(seoul)
    seoul_calendar = await calendar(seoul, evening)
    assert (await busan.client.get(f"{LIGHTING}/programs/{evening['id']}")).status_code == 404
    assert (await busan.client.get(f"{LIGHTING}/programs")).json() == []
    assert (await busan.client.delete(f"{LIGHTING}/programs/{evening['id']}")).status_code == 404
    borrowed = await busan.client.post(f"{LIGHTING}/calendars", json={"name": "x", "default_program_id": evening["id"]})
    assert borrowed.status_code == 422
    assigned = await busan.client.post(f"{LIGHTING}/assignments", json={
        "calendar_id": seoul_calendar["id"], "district": "Haeundae-gu"})
    assert assigned.status_code == 422 and fields_of(assigned) == {"calendar_id"}
    seoul_light = await light(seoul, 7)
    foreign = await busan.client.post(f"{LIGHTING}/overrides", json={
        "scope": {"device_ids": [seoul_light["id"]]}, "dimming_level": 0, "duration_s": 60})
    assert foreign.status_code == 422
    preview = await busan.client.get(f"{LIGHTING}/preview", params={"device_id": seoul_light["id"]})
    assert preview.status_code == 404


async def test_mutations_are_audited(seoul):
    evening = await program(seoul)
    await seoul.client.put(f"{LIGHTING}/programs/{evening['id']}", json={**EVENING_PROGRAM, "name": "late"})
    made = await calendar(seoul, evening)
    await light(seoul, 1, district="x")
    await created(await seoul.client.post(f"{LIGHTING}/assignments", json={"calendar_id": made["id"], "district": "x"}))
    override = await created(await seoul.client.post(f"{LIGHTING}/overrides", json={
        "scope": {"district": "x"}, "dimming_level": 100, "duration_s": 60}))
    await seoul.client.post(f"{LIGHTING}/overrides/{override['id']}/cancel")
    entries = (await seoul.client.get("/api/v1/audit")).json()["items"]
    actions = [e["action"] for e in reversed(entries) if e["action"].startswith("lighting.")]
    assert actions == ["lighting.program.create", "lighting.program.update", "lighting.calendar.create",
                       "lighting.assignment.create", "lighting.override.create", "lighting.override.cancel"]
    update = next(e for e in entries if e["action"] == "lighting.program.update")
    assert (update["before"]["name"], update["after"]["name"]) == ("evening", "late")


async def test_preview_of_a_light_and_a_group(seoul):
    lamp, other = await light(seoul, 1), await light(seoul, 2, district="Mapo-gu")
    evening, sun = await program(seoul), await program(seoul, SUN_PROGRAM)
    city_calendar = await calendar(seoul, evening, rules=[
        {"id": "christmas", "program_id": sun["id"], "dates": ["2026-12-25"]}])
    await created(await seoul.client.post(f"{LIGHTING}/assignments", json={
        "calendar_id": city_calendar["id"], "district": "Jung-gu"}))

    response = await seoul.client.get(f"{LIGHTING}/preview", params={"device_id": lamp["id"], "at": "2026-12-24T22:00"})
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["dimming_level"] == 100 and preview["timezone"] == "Asia/Seoul"
    (lights,) = preview["lights"]
    # Every time of the preview as Seoul's clocks show it.
    assert (preview["at"], preview["until"], lights["since"]) == (
        "2026-12-24T22:00:00+09:00", "2026-12-26T22:00:00+09:00", "2026-12-24T18:00:00+09:00")
    assert lights["transitions"][0]["at"] == "2026-12-24T23:00:00+09:00"
    assert all(t["at"].endswith("+09:00") for t in lights["transitions"])
    assert lights["sunset"].endswith("+09:00") and lights["sunrise"].endswith("+09:00")
    assert lights["device_ids"] == [lamp["id"]] and lights["assigned_via"] == "district"
    assert (lights["source"], lights["switch_point_id"]) == ("default", "on")
    assert dt.datetime.fromisoformat(lights["since"]) == dt.datetime(2026, 12, 24, 18, tzinfo=KST)
    local = [(dt.datetime.fromisoformat(t["at"]).astimezone(KST).strftime("%d %H:%M"), t["dimming_level"])
             for t in lights["transitions"]]
    # Christmas night follows the sun; the evening program's 06:00 "off" is the night before's.
    assert local[:2] == [("24 23:00", 50), ("25 06:00", 0)]
    assert local[2][1] == 100 and "17:20" <= local[2][0][3:] <= "17:45"
    assert local[3][1] == 0 and local[4:] == [("26 18:00", 100)]
    sunset = dt.datetime.fromisoformat(lights["sunset"]).astimezone(KST)
    assert dt.time(17, 5) < sunset.time() < dt.time(17, 30)

    group = await created(await seoul.client.post("/api/v1/groups", json={
        "name": "both", "device_ids": [lamp["id"], other["id"]]}))
    grouped = (await seoul.client.get(f"{LIGHTING}/preview", params={
        "group_id": group["id"], "at": "2026-12-24T13:00:00+00:00"})).json()
    assert grouped["dimming_level"] is None
    assert {entry["device_ids"][0]: entry["dimming_level"] for entry in grouped["lights"]} == {
        lamp["id"]: 100, other["id"]: None}
    neither = await seoul.client.get(f"{LIGHTING}/preview")
    assert neither.status_code == 422


async def test_energy_and_savings_from_counters_and_power(seoul, db):
    counters, meter, silent = await light(seoul, 0), await light(seoul, 1), await light(seoul, 2)
    evening = await program(seoul)
    made = await calendar(seoul, evening)
    await created(await seoul.client.post(f"{LIGHTING}/assignments", json={
        "calendar_id": made["id"], "district": "Jung-gu"}))
    # 18:00-23:00 at 100 W, 23:00-06:00 at 50 W: 500 + 350 = 850 Wh of a full-power 1200 Wh.
    start = dt.datetime(2026, 11, 20, 18, tzinfo=KST)
    rows = []
    energy = 0.0
    for quarter in range(-4, 12 * 4 + 5):
        at = start + dt.timedelta(minutes=15 * quarter)
        watts = 100 if 0 <= quarter < 20 else 50 if 20 <= quarter < 48 else 1.5
        rows.append((seoul.tenant_id, counters["id"], at, "/3418/0/6", energy))
        if 0 <= quarter < 48:
            rows.append((seoul.tenant_id, meter["id"], at, "/3418/0/4", float(watts)))
        energy += watts / 4
    async with db.system_tx() as conn:
        await conn.executemany(
            "insert into telemetry (tenant_id, device_id, time, path, v_num) values ($1, $2, $3, $4, $5)", rows)

    period = {"since": "2026-11-20T12:00:00+09:00", "until": "2026-11-21T12:00:00+09:00"}
    one = (await seoul.client.get(f"{LIGHTING}/energy", params={"device_id": counters["id"], **period})).json()
    # The window the figures cover, in Seoul's local time whatever offset the query used.
    assert one["window"] == {"from": "2026-11-20T12:00:00+09:00", "to": "2026-11-21T12:00:00+09:00"}
    assert (one["since"], one["until"]) == (one["window"]["from"], one["window"]["to"])
    utc = (await seoul.client.get(f"{LIGHTING}/energy", params={
        "device_id": counters["id"], "since": "2026-11-20T03:00:00Z", "until": "2026-11-21T03:00:00Z"})).json()
    assert utc["window"] == one["window"] and utc["energy_wh"] == one["energy_wh"]
    (entry,) = one["devices"]
    assert entry["method"] == "cumulative_energy" and entry["nights"] == 1 and entry["lit_hours"] == 12
    assert (entry["energy_wh"], entry["full_power_wh"], entry["savings_wh"]) == (850, 1200, 350)
    district = await seoul.client.get(f"{LIGHTING}/energy", params={
        "district": "Jung-gu", "breakdown": "true", **period})
    assert district.status_code == 200, district.text
    report = district.json()
    assert (report["lights"], report["lights_with_data"]) == (3, 2)
    by_id = {e["device_id"]: e for e in report["devices"]}
    assert by_id[meter["id"]]["method"] == "active_power"
    assert abs(by_id[meter["id"]]["energy_wh"] - 850) < 0.01
    assert by_id[silent["id"]]["method"] == "none" and by_id[silent["id"]]["energy_wh"] is None
    assert report["energy_wh"] == 1700 and report["full_power_wh"] == 2400 and report["savings_percent"] == 29.2
    too_long = await seoul.client.get(f"{LIGHTING}/energy", params={
        "district": "Jung-gu", "since": "2026-01-01T00:00:00+09:00", "until": "2026-03-01T00:00:00+09:00"})
    assert too_long.status_code == 422


async def test_preview_of_a_light_without_a_calendar_under_an_override(seoul):
    lamp = await light(seoul, 1, district="Mapo-gu")
    starts = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    await created(await seoul.client.post(f"{LIGHTING}/overrides", json={
        "scope": {"district": "Mapo-gu"}, "dimming_level": 100, "starts_at": starts.isoformat(),
        "duration_s": 7200, "reason": "festival"}))
    during = (await seoul.client.get(f"{LIGHTING}/preview", params={
        "device_id": lamp["id"], "at": (starts + dt.timedelta(minutes=30)).isoformat()})).json()
    (lights,) = during["lights"]
    assert (lights["calendar_id"], lights["dimming_level"], lights["source"]) == (None, 100, "override")
    assert [(t["dimming_level"], t["source"]) for t in lights["transitions"]] == [(None, "resume")]
    assert dt.datetime.fromisoformat(lights["transitions"][0]["at"]) == starts + dt.timedelta(hours=2)

    before = (await seoul.client.get(f"{LIGHTING}/preview", params={"device_id": lamp["id"]})).json()
    (lights,) = before["lights"]
    assert lights["dimming_level"] is None
    assert [(t["dimming_level"], t["source"]) for t in lights["transitions"]] == [(100, "override"), (None, "resume")]
