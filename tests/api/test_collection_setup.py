"""A city's collection set-up over real HTTP: depots, disposal sites, vehicles, time windows and
settings; their problems (422, 404, 409) and the wall between cities."""

from __future__ import annotations

C = "/api/v1/collection"
VEHICLE = {"name": "Truck", "waste_kind": "inorganic", "capacity_litres": 8000, "count": 2,
           "shift_start": "06:00", "shift_end": "14:00"}


async def test_depots_sites_and_vehicles_are_created_listed_fetched_and_deleted(seoul, busan):
    client = seoul.client
    depot = await client.post(f"{C}/depots", json={"name": "North depot", "location": {"lat": 37.6, "lon": 127.0}})
    assert depot.status_code == 201, depot.text
    depot = depot.json()
    assert depot["location"] == {"lat": 37.6, "lon": 127.0} and depot["name"] == "North depot"
    site = await client.post(f"{C}/disposal-sites", json={"name": "Incinerator", "location": {"lat": 37.5, "lon": 126.9},
                                                           "waste_kinds": ["inorganic"]})
    assert site.status_code == 201 and site.json()["waste_kinds"] == ["inorganic"]
    vehicle = await client.post(f"{C}/vehicles", json={**VEHICLE, "depot_id": depot["id"], "cost_per_km": 2.5})
    assert vehicle.status_code == 201, vehicle.text
    vehicle = vehicle.json()
    assert (vehicle["shift_start"], vehicle["count"], vehicle["cost_per_km"], vehicle["cost_per_hour"]) == (
        "06:00", 2, 2.5, 30.0)

    assert [d["id"] for d in (await client.get(f"{C}/depots")).json()] == [depot["id"]]
    assert (await client.get(f"{C}/vehicles/{vehicle['id']}")).json() == vehicle
    assert (await client.get(f"{C}/disposal-sites")).json() == [site.json()]

    # The wall: Busan sees none of it, cannot base a truck at Seoul's depot, cannot delete it.
    assert (await busan.client.get(f"{C}/depots")).json() == []
    assert (await busan.client.get(f"{C}/depots/{depot['id']}")).status_code == 404
    assert (await busan.client.delete(f"{C}/depots/{depot['id']}")).status_code == 404
    foreign = await busan.client.post(f"{C}/vehicles", json={**VEHICLE, "depot_id": depot["id"]})
    assert foreign.status_code == 422 and foreign.json()["errors"][0]["field"] == "depot_id"

    # A depot a vehicle is based at stays; once the vehicle is gone it goes.
    used = await client.delete(f"{C}/depots/{depot['id']}")
    assert used.status_code == 409 and used.headers["content-type"].startswith("application/problem+json")
    assert "Truck" in used.json()["detail"]
    assert (await client.delete(f"{C}/vehicles/{vehicle['id']}")).status_code == 204
    assert (await client.get(f"{C}/vehicles/{vehicle['id']}")).status_code == 404
    assert (await client.delete(f"{C}/depots/{depot['id']}")).status_code == 204
    assert (await client.delete(f"{C}/depots/{depot['id']}")).status_code == 404
    assert (await client.delete(f"{C}/disposal-sites/{site.json()['id']}")).status_code == 204

    audit = (await client.get("/api/v1/audit", params={"entity_type": "collection_depot"})).json()["items"]
    assert sorted(e["action"] for e in audit) == ["collection.depot.create", "collection.depot.delete"]


async def test_bad_set_up_is_refused_naming_the_field(seoul):
    client = seoul.client
    depot = (await client.post(f"{C}/depots", json={"name": "D", "location": {"lat": 37.6, "lon": 127.0}})).json()
    assert (await client.post(f"{C}/depots", json={"name": "D", "location": {"lat": 37.0, "lon": 127.0}})).status_code == 409
    for bad in ({"name": "X", "location": {"lat": 91, "lon": 0}}, {"name": "X"}, {"name": "", "location": {"lat": 1, "lon": 1}}):
        assert (await client.post(f"{C}/depots", json=bad)).status_code in (400, 422), bad
    missing = await client.post(f"{C}/vehicles", json={**VEHICLE, "depot_id": "00000000-0000-4000-8000-000000000000"})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "depot_id"
    empty = await client.post(f"{C}/vehicles", json={**VEHICLE, "depot_id": depot["id"], "shift_end": "06:00"})
    assert empty.status_code == 422 and empty.json()["errors"] == [
        {"field": "shift_end", "message": "must differ from shift_start"}], empty.text
    # Ending before it starts: a night round, into the next morning.
    night = await client.post(f"{C}/vehicles", json={**VEHICLE, "name": "Night truck", "depot_id": depot["id"],
                                                      "shift_start": "22:00", "shift_end": "06:00"})
    assert night.status_code == 201 and (night.json()["shift_start"], night.json()["shift_end"]) == ("22:00", "06:00")
    for bad in ({"capacity_litres": 0}, {"waste_kind": "lava"}, {"count": 0}):
        assert (await client.post(f"{C}/vehicles", json={**VEHICLE, "depot_id": depot["id"], **bad})).status_code == 400
    window = await client.post(f"{C}/time-windows", json={"starts": "09:00", "ends": "08:00"})
    assert window.status_code == 422 and window.json()["errors"][0]["field"] == "ends"
    lone = await client.post(f"{C}/time-windows", json={"starts": "08:00", "ends": "09:00", "radius_m": 300})
    assert lone.status_code == 422
    sunday_zero = await client.post(f"{C}/time-windows", json={"starts": "08:00", "ends": "09:00", "weekdays": [0]})
    assert sunday_zero.status_code == 422 and sunday_zero.json()["errors"][0]["field"] == "weekdays"


async def test_time_windows_and_settings(seoul, busan):
    client = seoul.client
    window = await client.post(f"{C}/time-windows", json={
        "name": "School street", "starts": "08:00", "ends": "09:00", "weekdays": [1, 2, 3, 4, 5],
        "center": {"lat": 37.55, "lon": 126.99}, "radius_m": 250})
    assert window.status_code == 201, window.text
    assert window.json()["center"] == {"lat": 37.55, "lon": 126.99} and window.json()["weekdays"] == [1, 2, 3, 4, 5]
    assert (await busan.client.get(f"{C}/time-windows")).json() == []
    assert (await client.delete(f"{C}/time-windows/{window.json()['id']}")).status_code == 204

    defaults = (await client.get(f"{C}/settings")).json()
    assert (defaults["threshold_percent"], defaults["time_limit_s"], defaults["road_factor"]) == (80, 30, 1.35)
    changed = await client.patch(f"{C}/settings", json={"threshold_percent": 75, "plan_at": "19:30"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["threshold_percent"], changed.json()["plan_at"], changed.json()["service_s"]) == (
        75, "19:30", 90)
    assert (await client.get(f"{C}/settings")).json() == changed.json()
    assert (await busan.client.get(f"{C}/settings")).json() == defaults
    assert (await client.patch(f"{C}/settings", json={"time_limit_s": 601})).status_code == 400
    assert (await client.patch(f"{C}/settings", json={"plan_at": None})).json()["plan_at"] is None
    audit = (await client.get("/api/v1/audit", params={"action": "collection.settings.update"})).json()["items"]
    assert len(audit) == 2
