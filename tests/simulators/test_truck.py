"""The simulated truck over the real crew routes REST: it finds its crew's route, empties each bin
it reaches and marks the stop done, then finishes the route; the demo hands the day's routes to
its crew. And the simulation's side: a truck at a bin empties that simulated bin."""

from __future__ import annotations

import asyncio
from datetime import date

from simulators.inventory import DeviceSpec
from simulators.rest import FleetApi
from simulators.seed_collection import plan_and_assign
from simulators.simulation import Simulation, SimulationConfig
from simulators.truck import Truck
from tests.api.workorder_helpers import add_crew
from tests.fleet.collection.route_fixtures import seed_route
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


def test_a_truck_at_a_simulated_bin_empties_it():
    config = SimulationConfig(counts={"waste_bin": 1}, collection="fleet")
    simulation = Simulation(config, out=None)
    spec = DeviceSpec("waste_bin", "seoul-sim-wb-00001", 37.56, 126.99, "Jung-gu",
                      attributes={"waste_kind": "paper", "capacity_litres": 240})
    simulation._build([spec], "Asia/Seoul", ("127.0.0.1", 5683))
    bin_ = simulation.device(spec.endpoint)
    bin_.fill_l = 200.0
    assert simulation.empty_bin(spec.endpoint) and bin_.fill_percentage() <= 2
    assert not simulation.empty_bin("seoul-sim-wb-99999")
