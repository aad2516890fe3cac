"""The simulated truck over the real crew routes REST: it finds its crew's route, empties each bin
it reaches and marks the stop done, then finishes the route; the demo hands the day's routes to
its crew. And the simulation's side: a truck at a bin empties that simulated bin."""

from __future__ import annotations

import asyncio
from datetime import date
from uuid import UUID

from simulators.inventory import DeviceSpec
from simulators.rest import FleetApi
from simulators.seed_collection import plan_and_assign
from simulators.simulation import Simulation, SimulationConfig
from simulators.truck import Truck
from tests.api.workorder_helpers import add_crew
from tests.simulators.conftest import eventually, provision, running
from tests.fleet.collection.route_fixtures import replanned, seed_route
from fleet.access.models import Role
from fleet.access.service import ApiKeyService

ROUTES = "/api/v1/routes"


async def test_the_truck_drives_its_crews_route_and_empties_the_bins(db, seoul, api_url):
    crew = await add_crew(seoul, "Demo crew")
    seeded = await seed_route(db, seoul.tenant_id, bins=3)
    route = (await seoul.client.get(f"{ROUTES}/{seeded.route_id}")).json()
    endpoints = [s["device"]["endpoint"] for s in route["stops"] if s["kind"] == "bin"]
    key = (await ApiKeyService(db).issue(seoul.principal, Role.CREW, "truck", crew["id"])).secret

    async with FleetApi(api_url, seoul.key) as control_room:
        # The demo gives the day's routes nobody drives to its crew (once: a second pass finds none).
        day = date.fromisoformat(route["date"])
        handed = await plan_and_assign(control_room, crew["id"], day, make_plan=False)
        assert (handed.routes, handed.assigned, handed.plan_id) == (1, 1, None)
        assert (await plan_and_assign(control_room, crew["id"], day, make_plan=False)).assigned == 0

    emptied: list[str] = []
    async with FleetApi(api_url, key) as tablet:
        truck = Truck(tablet, lambda endpoint: emptied.append(endpoint) or True, speed=1e6)
        await truck.poll()
        assert list(truck.driving) == [str(seeded.route_id)]
        await asyncio.wait_for(truck.driving[str(seeded.route_id)], 30)
        await truck.poll()  # a completed route is not driven again
        assert list(truck.driving) == [str(seeded.route_id)]

    assert emptied == endpoints and truck.stops_done == 4  # three bins and the disposal site
    after = (await seoul.client.get(f"{ROUTES}/{seeded.route_id}")).json()
    assert after["status"] == "completed" and after["bins_emptied"] == 3
    assert {s["status"] for s in after["stops"]} == {"done"}
    assert {s["done_source"] for s in after["stops"] if s["kind"] == "bin"} == {"crew"}


async def test_a_truck_whose_route_is_re_planned_under_it_drives_the_new_one(db, seoul, api_url):
    crew = await add_crew(seoul, "Demo crew")
    seeded = await seed_route(db, seoul.tenant_id, bins=2)
    assert (await seoul.client.post(f"{ROUTES}/{seeded.route_id}/assign", json={"crew_id": crew["id"]})
            ).status_code == 200
    key = (await ApiKeyService(db).issue(seoul.principal, Role.CREW, "truck", crew["id"])).secret
    new_route = await replanned(db, seeded)
    async with FleetApi(api_url, key) as tablet:
        truck = Truck(tablet, lambda endpoint: True, speed=1e6)
        # The old route's stop is refused (409, re-planned): the drive ends quietly, nothing marked.
        await truck.drive(str(seeded.route_id))
        assert truck.stops_done == 0
        await truck.poll()
        assert list(truck.driving) == [str(new_route)]
        await asyncio.wait_for(truck.driving[str(new_route)], 30)
    after = (await seoul.client.get(f"{ROUTES}/{new_route}")).json()
    assert after["status"] == "completed" and after["bins_emptied"] == 2


def test_a_truck_at_a_simulated_bin_empties_it():
    config = SimulationConfig(counts={"waste_bin": 1}, collection="fleet")
    simulation = Simulation(config, out=None)
    spec = DeviceSpec("waste_bin", "seoul-sim-wb-00001", 37.56, 126.99, "Jung-gu",
                      attributes={"waste_kind": "paper", "capacity_litres": 240})
    simulation._build([spec], "Asia/Seoul", config.servers())
    bin_ = simulation.device(spec.endpoint)
    bin_.fill_l = 200.0
    assert simulation.empty_bin(spec.endpoint) and bin_.fill_percentage() <= 2
    assert not simulation.empty_bin("seoul-sim-wb-99999")


async def test_fleet_only_collection_a_truck_empties_the_simulated_bins_of_its_route(db, listener, seoul, api_url,
                                                                                    tmp_path):
    devices_file = await provision(seoul, tmp_path, {"waste_bin": 3})
    bins = (await seoul.client.get("/api/v1/devices", params={"kind": "waste_bin"})).json()["items"]
    seeded = await seed_route(db, seoul.tenant_id, bins=3)
    async with db.tenant_tx(seoul.tenant_id) as conn:  # the route's stops at the simulated bins
        for stop_id, device in zip(seeded.stop_ids, bins, strict=False):
            await conn.execute("update collection_stops set device_id = $1 where id = $2", UUID(device["id"]), stop_id)
    crew = await add_crew(seoul, "Truck crew")
    assert (await seoul.client.post(f"{ROUTES}/{seeded.route_id}/assign", json={"crew_id": crew["id"]})
            ).status_code == 200
    key = (await ApiKeyService(db).issue(seoul.principal, Role.CREW, "truck", crew["id"])).secret
    config = SimulationConfig(counts={"waste_bin": 3}, server=f"coap://127.0.0.1:{listener.port}",
                              devices_file=devices_file, api=api_url, truck_key=key, collection="fleet",
                              seed=5, speed=600, progress_s=0)
    async with running(config) as simulation:
        full = {}
        for device in bins:
            bin_ = simulation.device(device["endpoint"])
            bin_.fill_l, full[device["endpoint"]] = bin_.capacity_l * 0.9, bin_.collections
        # Ten planned minutes between stops take a second at x600.
        route = await eventually(lambda: _completed(seoul.client, seeded.route_id), timeout_s=30)
        assert route["bins_emptied"] == 3
        for endpoint, before in full.items():
            bin_ = simulation.device(endpoint)
            assert bin_.fill_percentage() < 10 and bin_.collections == before + 1
        # Fleet hears the drop from the bins themselves.
        ids = [UUID(d["id"]) for d in bins]

        async def reported_empty() -> bool:
            async with db.system_tx() as conn:
                values = await conn.fetch("select v_num from device_state where path = '/3435/0/2' "
                                          "and device_id = any($1::uuid[])", ids)
            return len(values) == 3 and all(v["v_num"] < 10 for v in values)

        await eventually(reported_empty, timeout_s=20)


async def _completed(client, route_id) -> dict | None:
    route = (await client.get(f"{ROUTES}/{route_id}")).json()
    return route if route["status"] == "completed" else None


async def test_a_stop_the_tablet_skipped_meanwhile_is_left_as_it_is(db, seoul, api_url):
    crew = await add_crew(seoul, "Demo crew")
    seeded = await seed_route(db, seoul.tenant_id, bins=2)
    async with FleetApi(api_url, seoul.key) as control_room:
        route = await control_room.get(f"{ROUTES}/{seeded.route_id}")
        await plan_and_assign(control_room, crew["id"], date.fromisoformat(route["date"]), make_plan=False)
    key = (await ApiKeyService(db).issue(seoul.principal, Role.CREW, "truck", crew["id"])).secret
    async with FleetApi(api_url, key) as tablet:
        first = route["stops"][0]
        await tablet.post(f"{ROUTES}/{seeded.route_id}/stops/{first['id']}",
                          {"status": "skipped", "reason": "blocked", "notes": "a van parked on it"})
        truck = Truck(tablet, lambda endpoint: True, speed=1e6)
        await truck.reach(str(seeded.route_id), first)  # its stale copy said planned: the 409 stays here
        assert truck.stops_done == 0
        await truck.drive(str(seeded.route_id))
    after = (await seoul.client.get(f"{ROUTES}/{seeded.route_id}")).json()
    assert after["status"] == "completed"
    assert [s["status"] for s in after["stops"]] == ["skipped", *["done"] * (len(after["stops"]) - 1)]


async def test_the_truck_stops_driving_a_route_no_longer_its_crews(db, seoul, api_url):
    crew = await add_crew(seoul, "Demo crew")
    seeded = await seed_route(db, seoul.tenant_id, bins=2)
    async with FleetApi(api_url, seoul.key) as control_room:
        route = await control_room.get(f"{ROUTES}/{seeded.route_id}")
        await plan_and_assign(control_room, crew["id"], date.fromisoformat(route["date"]), make_plan=False)
        key = (await ApiKeyService(db).issue(seoul.principal, Role.CREW, "truck", crew["id"])).secret
        async with FleetApi(api_url, key) as tablet:
            truck = Truck(tablet, lambda endpoint: True, speed=1e-6)  # it would wait for ages
            await truck.poll()
            task = truck.driving[str(seeded.route_id)]
            await control_room.post(f"{ROUTES}/{seeded.route_id}/assign", {"crew_id": None})
            await truck.poll()
            await asyncio.wait([task], timeout=10)
            assert task.cancelled()
