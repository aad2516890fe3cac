"""Shared steps of the work-order tests: devices at known places, crews and crew keys."""

from __future__ import annotations

import httpx

from fleet.access.models import Role
from fleet.access.service import ApiKeyService

WORKORDERS = "/api/v1/workorders"


async def add_device(city, n: int, lat: float, lon: float, kind: str = "streetlight") -> dict:
    response = await city.client.post("/api/v1/devices", json={
        "kind": kind, "endpoint": f"{city.slug}-{kind}-{n}", "location": {"lat": lat, "lon": lon}})
    assert response.status_code == 201, response.text
    return response.json()


async def add_crew(city, name: str) -> dict:
    response = await city.client.post("/api/v1/crews", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


async def crew_client(db, city, crew_id, api_url: str) -> httpx.AsyncClient:
    """An HTTP client with a crew key of `crew_id` (the caller closes it)."""
    from uuid import UUID
    issued = await ApiKeyService(db).issue(city.principal, Role.CREW, "tablet", UUID(crew_id))
    return httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {issued.secret}"})


async def create_order(client: httpx.AsyncClient, **body) -> dict:
    response = await client.post(WORKORDERS, json={"type": "repair_lamp", "priority": "high", **body})
    assert response.status_code == 201, response.text
    return response.json()


async def patch_order(client: httpx.AsyncClient, order: dict, expect: int = 200, **body) -> dict:
    response = await client.patch(f"{WORKORDERS}/{order['id']}", json=body,
                                  headers={"If-Match": f'"{order["version"]}"'})
    assert response.status_code == expect, response.text
    return response.json()
