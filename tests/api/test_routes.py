"""Routes crews drive, over real HTTP and PostgreSQL: assignment, the tablet's view, stops marked
done or skipped (a damaged bin opens one work order), progress, and who may touch what."""

from __future__ import annotations

import json

from uuid import UUID

from tests.api.workorder_helpers import add_crew, crew_client
from tests.fleet.collection.route_fixtures import seed_route

ROUTES = "/api/v1/routes"


async def test_a_crews_day_on_its_route(db, seoul, api_url):
    north = await add_crew(seoul, "North team")
    south = await add_crew(seoul, "South team")
    seeded = await seed_route(db, seoul.tenant_id, bins=3)
    route_url = f"{ROUTES}/{seeded.route_id}"
    first, second, third, site = seeded.stop_ids

    route = (await seoul.client.get(route_url)).json()
    assert route["status"] == "planned" and [s["seq"] for s in route["stops"]] == [0, 1, 2, 3]
    bin_stop = route["stops"][0]
    assert bin_stop["kind"] == "bin" and bin_stop["device"]["waste_kind"] == "inorganic"
    assert bin_stop["device"]["address"].endswith("street") and route["stops"][3]["kind"] == "disposal"

    # Assigning is the control room's; a crew that does not exist in the city is refused.
    assert (await seoul.client.post(f"{route_url}/assign", json={"crew_id": str(UUID(int=7))})).status_code == 422
    assigned = await seoul.client.post(f"{route_url}/assign", json={"crew_id": north["id"]})
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["status"] == "assigned" and assigned.headers["etag"] == '"2"'

    async with await crew_client(db, seoul, north["id"], api_url) as tablet, \
            await crew_client(db, seoul, south["id"], api_url) as other:
        mine = (await tablet.get(ROUTES, params={"assigned_to": "me"})).json()["items"]
        assert [r["id"] for r in mine] == [str(seeded.route_id)]
        assert (await other.get(ROUTES, params={"assigned_to": "me"})).json()["items"] == []
        assert (await tablet.post(f"{route_url}/assign", json={"crew_id": south["id"]})).status_code == 403
        # Another crew may not mark this route's stops.
        refused = await other.post(f"{route_url}/stops/{first}", json={"status": "done"})
        assert refused.status_code == 403, refused.text

        done = await tablet.post(f"{route_url}/stops/{first}", json={"status": "done"})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["status"] == "in_progress" and body["started_at"] is not None
        assert body["stops"][0]["status"] == "done" and body["stops"][0]["done_source"] == "crew"
        assert body["progress"]["done"] == 1 and body["progress"]["left"] == 3 and body["bins_emptied"] == 1
        # Done is once: the same mark again changes nothing; done to skipped is the control room's.
        again = await tablet.post(f"{route_url}/stops/{first}", json={"status": "done"})
        assert again.status_code == 200 and again.json()["version"] == body["version"]
        assert again.json()["stops"][0]["done_at"] == body["stops"][0]["done_at"]
        conflict = await tablet.post(f"{route_url}/stops/{first}", json={"status": "skipped", "reason": "blocked"})
        assert conflict.status_code == 409, conflict.text
        # A stale If-Match is refused; the current one passes.
        stale = await tablet.post(f"{route_url}/stops/{second}", json={"status": "skipped", "reason": "blocked"},
                                  headers={"If-Match": '"1"'})
        assert stale.status_code == 412
        assert (await tablet.post(f"{route_url}/stops/{second}", json={"status": "skipped", "reason": "nope"})
                ).status_code == 400
        assert (await tablet.post(f"{route_url}/stops/{second}", json={"status": "skipped"})).status_code == 422

        # A damaged bin opens one work order, however often the tablet sends it.
        for _ in range(2):
            damaged = await tablet.post(f"{route_url}/stops/{second}", headers={"If-Match": f'"{body["version"]}"'},
                                        json={"status": "skipped", "reason": "damaged", "notes": "lid torn off"})
            assert damaged.status_code == 200, damaged.text
        stop = damaged.json()["stops"][1]
        assert stop["status"] == "skipped" and stop["skip_reason"] == "damaged" and stop["work_order_id"]
        orders = (await seoul.client.get("/api/v1/workorders")).json()["items"]
        assert [(o["type"], o["device_ids"]) for o in orders] == [("clean_or_repair_bin", [str(seeded.bin_ids[1])])]

        await tablet.post(f"{route_url}/stops/{third}", json={"status": "done"})
        last = await tablet.post(f"{route_url}/stops/{site}", json={"status": "done"})
        finished = last.json()
        progress = finished["progress"]
        assert finished["status"] == "completed" and finished["finished_at"] is not None
        assert (progress["stops"], progress["done"], progress["skipped"], progress["left"]) == (4, 3, 1, 0)
        assert progress["percent"] == 100.0 and finished["bins_emptied"] == 2
        # Depot, first bin, third bin, disposal site and back, along the roads (great circle x 1.35).
        assert 10 < finished["actual_km"] < 14 and progress["expected_km"] == 6.0

    # The control room corrects: the third bin was not emptied after all.
    corrected = await seoul.client.post(f"{route_url}/stops/{third}", json={"status": "skipped", "reason": "not_found"})
    assert corrected.status_code == 200 and corrected.json()["bins_emptied"] == 1

    day = finished["date"]
    listed = (await seoul.client.get(ROUTES, params={"date": day})).json()["items"]
    assert [(r["id"], r["progress"]["done"]) for r in listed] == [(str(seeded.route_id), 2)]
    assert "stops" not in listed[0] or listed[0]["stops"] is None
    async with db.tenant_tx(seoul.tenant_id) as conn:
        emptied = await conn.fetch("select device_id, source from bin_emptyings order by at")
        executes = await conn.fetch("select device_id, path from commands where operation = 'execute'")
        events = await conn.fetch("select kind, payload from events where kind like 'route.%'")
    assert [(r["device_id"], r["source"]) for r in emptied] == [(seeded.bin_ids[0], "stop")]
    assert sorted(r["device_id"] for r in executes) == sorted([seeded.bin_ids[0], seeded.bin_ids[2]])
    assert {r["path"] for r in executes} == {"/3435/0/9"}
    assert {"route.updated", "route.stop_updated"} <= {r["kind"] for r in events}
    stop_event = next(json.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"]
                      for r in events if r["kind"] == "route.stop_updated")
    assert "T" in stop_event["stop"]["arrival"]  # ISO 8601, like the API's own times


async def test_start_finish_and_unassign(db, seoul, api_url):
    crew = await add_crew(seoul, "Night team")
    seeded = await seed_route(db, seoul.tenant_id, bins=2)
    route_url = f"{ROUTES}/{seeded.route_id}"
    assert (await seoul.client.post(f"{route_url}/start")).status_code == 409  # nobody to drive it
    await seoul.client.post(f"{route_url}/assign", json={"crew_id": crew["id"]})
    back = await seoul.client.post(f"{route_url}/assign", json={"crew_id": None})
    assert back.json()["status"] == "planned" and back.json()["crew_id"] is None
    await seoul.client.post(f"{route_url}/assign", json={"crew_id": crew["id"]})
    async with await crew_client(db, seoul, crew["id"], api_url) as tablet:
        started = await tablet.post(f"{route_url}/start")
        assert started.status_code == 200 and started.json()["status"] == "in_progress"
        assert (await seoul.client.post(f"{route_url}/assign", json={"crew_id": None})).status_code == 409
        finished = await tablet.post(f"{route_url}/finish")
        body = finished.json()
        assert body["status"] == "completed" and body["progress"]["left"] == 3 and body["actual_km"] == 0
        assert (await tablet.post(f"{route_url}/finish")).status_code == 200
    assert (await seoul.client.get(f"{ROUTES}/{UUID(int=5)}")).status_code == 404
    assert (await seoul.client.get(ROUTES, params={"status": "lost"})).status_code == 422


async def test_a_retried_mark_with_the_same_idempotency_key_is_answered_once(db, seoul, api_url):
    crew = await add_crew(seoul, "Retry team")
    seeded = await seed_route(db, seoul.tenant_id, bins=1)
    route_url = f"{ROUTES}/{seeded.route_id}"
    await seoul.client.post(f"{route_url}/assign", json={"crew_id": crew["id"]})
    async with await crew_client(db, seoul, crew["id"], api_url) as tablet:
        answers = [await tablet.post(f"{route_url}/stops/{seeded.stop_ids[0]}", json={"status": "done"},
                                     headers={"Idempotency-Key": "stop-0-done"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200] and answers[0].json() == answers[1].json()
    async with db.tenant_tx(seoul.tenant_id) as conn:
        assert await conn.fetchval("select count(*) from commands where operation = 'execute'") == 1


async def test_the_tablets_sync_carries_the_crews_routes(db, seoul, api_url):
    north = await add_crew(seoul, "North team")
    south = await add_crew(seoul, "South team")
    ours = await seed_route(db, seoul.tenant_id, bins=1, prefix="ours")
    theirs = await seed_route(db, seoul.tenant_id, bins=1, prefix="theirs")
    await seoul.client.post(f"{ROUTES}/{ours.route_id}/assign", json={"crew_id": north["id"]})
    await seoul.client.post(f"{ROUTES}/{theirs.route_id}/assign", json={"crew_id": south["id"]})
    async with await crew_client(db, seoul, north["id"], api_url) as tablet:
        full = (await tablet.get("/api/v1/sync")).json()
        assert [(r["id"], len(r["stops"])) for r in full["routes"]] == [(str(ours.route_id), 2)]
        token = full["next"]
        await tablet.post(f"{ROUTES}/{ours.route_id}/stops/{ours.stop_ids[0]}", json={"status": "done"})
        await seoul.client.post(f"{ROUTES}/{theirs.route_id}/start")
        changes = (await tablet.get("/api/v1/sync", params={"since": token})).json()
        assert [(r["id"], r["stops"][0]["status"]) for r in changes["routes"]] == [(str(ours.route_id), "done")]
        # Given to the other crew: the tablet hears of it once, to drop it.
        await seoul.client.post(f"{ROUTES}/{ours.route_id}/assign", json={"crew_id": south["id"]})
        moved = (await tablet.get("/api/v1/sync", params={"since": changes["next"]})).json()
        assert [(r["id"], r["crew_id"]) for r in moved["routes"]] == [(str(ours.route_id), south["id"])]
    everything = (await seoul.client.get("/api/v1/sync")).json()
    assert {r["id"] for r in everything["routes"]} == {str(ours.route_id), str(theirs.route_id)}


async def test_a_crews_done_stop_is_one_emptying_not_two(db, seoul, api_url):
    """The stop records the emptying; the Execute it sends, once the bin acknowledges it, is not
    recorded again by the forecast job (an emptying counted twice halves the learned rate)."""
    from datetime import UTC, datetime

    from fleet.collection.profiling import refresh_all

    seeded = await seed_route(db, seoul.tenant_id, bins=1)
    done = await seoul.client.post(f"{ROUTES}/{seeded.route_id}/stops/{seeded.stop_ids[0]}", json={"status": "done"})
    assert done.status_code == 200, done.text
    async with db.system_tx() as conn:
        await conn.execute("""update commands set status = 'succeeded', completed_at = now()
                              where tenant_id = $1 and path = '/3435/0/9'""", seoul.tenant_id)
    await refresh_all(db, datetime.now(UTC))
    async with db.tenant_tx(seoul.tenant_id) as conn:
        sources = [r["source"] for r in await conn.fetch("select source from bin_emptyings")]
    assert sources == ["stop"]


async def test_a_superseded_plans_route_refuses_marks_and_names_its_successor(db, seoul, api_url):
    """A tablet still holding the route a re-plan replaced cannot mark it (the mark would be lost
    with the old copy): 409 naming the route that replaces it; nor is the old route in the sync."""
    crew = await add_crew(seoul, "North team")
    seeded = await seed_route(db, seoul.tenant_id, bins=2)
    route_url = f"{ROUTES}/{seeded.route_id}"
    assert (await seoul.client.post(f"{route_url}/assign", json={"crew_id": crew["id"]})).status_code == 200
    async with db.tenant_tx(seoul.tenant_id) as conn:
        # As fleet.collection.replanning stores it: the same truck's route in a plan that replaces it.
        old = await conn.fetchrow("select * from collection_routes where id = $1", seeded.route_id)
        new_plan = await conn.fetchval(
            """insert into collection_plans (tenant_id, date, status, source, replaces_id, time_limit_s)
               select tenant_id, date, 'ready', 'replan', id, 2 from collection_plans where id = $1 returning id""",
            seeded.plan_id)
        successor = await conn.fetchval(
            """insert into collection_routes (tenant_id, plan_id, vehicle_id, vehicle_number, crew_id, status,
                                              starts_at, ends_at, distance_m, duration_s)
               values ($1, $2, $3, 0, $4, 'assigned', $5, $6, 1, 1) returning id""",
            seoul.tenant_id, new_plan, old["vehicle_id"], old["crew_id"], old["starts_at"], old["ends_at"])
        await conn.execute("update collection_plans set status = 'superseded' where id = $1", seeded.plan_id)

    async with await crew_client(db, seoul, crew["id"], api_url) as tablet:
        refused = await tablet.post(f"{route_url}/stops/{seeded.stop_ids[0]}", json={"status": "done"})
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["replaced_by"] == str(successor) and str(successor) in refused.json()["detail"]
        assert (await tablet.post(f"{route_url}/start")).status_code == 409
        synced = (await tablet.get("/api/v1/sync")).json()
        assert str(seeded.route_id) not in str(synced) and str(successor) in str(synced)
    assert (await seoul.client.post(f"{route_url}/assign", json={"crew_id": None})).status_code == 409
    async with db.tenant_tx(seoul.tenant_id) as conn:
        assert await conn.fetchval("select status from collection_stops where id = $1", seeded.stop_ids[0]) == "planned"
