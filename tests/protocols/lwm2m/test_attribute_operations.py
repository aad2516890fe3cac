"""Write-Attributes and Discover as command operations: REST in, real UDP to a device, result out."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import make_city
from tests.protocols.lwm2m.rawdevice import CREATED, GET, PUT, SENML_JSON, RawDevice
from tests.protocols.lwm2m.test_negotiation import IDENTITY
from tests.protocols.test_commands import light


async def finished(client: httpx.AsyncClient, command_id: str) -> dict:
    for _ in range(150):
        command = (await client.get(f"/api/v1/commands/{command_id}")).json()
        if command["counts"]["queued"] == command["counts"]["sent"] == 0:
            return command
        await asyncio.sleep(0.1)
    raise AssertionError(f"command still {command['counts']}")


async def test_write_attributes_and_discover_reach_the_device(db, listener, api_url):
    city = await make_city(db, "seoul")
    record = await light(db, city, "tuned")
    device = RawDevice("tuned", (SENML_JSON,), dict(IDENTITY))
    await device.start()
    client = httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {city.key}"})
    try:
        assert (await device.register(listener.port)).code == CREATED
        target = {"device_ids": [str(record.id)]}
        response = await client.post("/api/v1/commands", json={
            "target": target, "operation": "write_attributes", "path": "/3416/0/1",
            "attributes": {"pmin": 10, "pmax": 60, "gt": 80, "lt": 20.5, "st": 5}})
        assert response.status_code == 202, response.text
        command = await finished(client, response.json()["id"])
        assert command["devices"][0]["status"] == "succeeded", command
        put = [r for r in device.requests if r.code == PUT][-1]
        assert put.path == "/3416/0/1" and put.payload == b""
        assert sorted(put.strings(15)) == ["gt=80", "lt=20.5", "pmax=60", "pmin=10", "st=5"]

        response = await client.post("/api/v1/commands", json={
            "target": target, "operation": "discover", "path": "/3416/0"})
        assert response.status_code == 202, response.text
        command = await finished(client, response.json()["id"])
        discover = [r for r in device.requests if r.code == GET and r.uint(17) == 40][-1]
        assert discover.path == "/3416/0"
        assert command["devices"][0]["result"] == {"links": [
            {"path": "/3416/0/1", "attributes": {}}]}

        response = await client.post("/api/v1/commands", json={
            "target": target, "operation": "discover", "path": "/3416/0/1"})
        command = await finished(client, response.json()["id"])
        assert command["devices"][0]["result"] == {"links": [
            {"path": "/3416/0/1", "attributes": {"pmin": 10, "pmax": 60}}]}
    finally:
        device.stop()
        await client.aclose()


async def test_bad_attributes_are_a_problem_document(db, api_url):
    city = await make_city(db, "seoul")
    record = await light(db, city, "tuned")
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {city.key}"}) as client:
        # Malformed attributes are 400; attributes that break the rules between them, 422.
        for attributes, where, status in [({"pmin": 60, "pmax": 10}, "attributes", 422),
                                          ({}, "attributes", 422), ({"pmin": -5}, "pmin", 400)]:
            response = await client.post("/api/v1/commands", json={
                "target": {"device_ids": [str(record.id)]}, "operation": "write_attributes",
                "path": "/3416/0/1", "attributes": attributes})
            assert response.status_code == status, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert where in response.text
        response = await client.post("/api/v1/commands", json={
            "target": {"device_ids": [str(record.id)]}, "operation": "write_attributes", "path": "/3416/0/1"})
        assert response.status_code == 422 and "attributes" in response.text  # decoded, then refused
