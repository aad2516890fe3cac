"""GET /api/v1/districts and the 422 for a district no device stands in, over real HTTP."""

from __future__ import annotations

import httpx

DEVICES = [("streetlight", "Jung-gu", "sl-1"), ("streetlight", "Jung-gu", "sl-2"),
           ("waste_bin", "Jung-gu", "bin-1"), ("streetlight", "Mapo-gu", "sl-3"), ("streetlight", None, "sl-4")]


async def add_devices(city) -> dict[str, str]:
    ids = {}
    for kind, district, endpoint in DEVICES:
        body = {"kind": kind, "endpoint": f"{city.slug}-{endpoint}", "location": {"lat": 37.56, "lon": 126.97},
                **({"district": district} if district else {}),
                **({"capacity_litres": 240} if kind == "waste_bin" else {})}
        response = await city.client.post("/api/v1/devices", json=body)
        assert response.status_code == 201, response.text
        ids[endpoint] = response.json()["id"]
    return ids


async def test_districts_count_devices_per_kind_and_status_for_any_reader(seoul, busan, api_url):
    ids = await add_devices(seoul)
    await seoul.client.patch(f"/api/v1/devices/{ids['sl-2']}", json={"status": "maintenance"})
    await seoul.client.delete(f"/api/v1/devices/{ids['sl-3']}")   # Mapo-gu is left with none in service
    await add_devices(busan)
    viewer_key = (await seoul.client.post("/api/v1/apikeys", json={"role": "viewer"})).json()["key"]
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {viewer_key}"}) as viewer:
        response = await viewer.get("/api/v1/districts")
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [
        {"name": "Jung-gu", "devices": 3, "by_kind": {"streetlight": 2, "waste_bin": 1},
         "by_status": {"provisioned": 2, "maintenance": 1}}]}


async def test_an_unknown_district_is_422_naming_it_everywhere_a_district_is_taken(seoul):
    await add_devices(seoul)
    asks = [
        seoul.client.get("/api/v1/devices", params={"district": "Jung-goo"}),
        seoul.client.get("/api/v1/devices/export", params={"district": "Jung-goo"}),
        seoul.client.get("/api/v1/alarms", params={"district": "Jung-goo"}),
        seoul.client.post("/api/v1/commands", json={"target": {"filter": {"district": "Jung-goo"}},
                                                    "operation": "read", "path": "/3/0/0"}),
        seoul.client.post("/api/v1/groups", json={"name": "typo", "filter": {"district": "Jung-goo"}}),
        seoul.client.post("/api/v1/lighting/overrides", json={
            "scope": {"district": "Jung-goo"}, "dimming_level": 100, "duration_s": 600}),
        seoul.client.get("/api/v1/lighting/energy", params={"district": "Jung-goo"}),
        seoul.client.get("/api/v1/bins/forecast", params={"district": "Jung-goo"}),
        seoul.client.post("/api/v1/collection/time-windows", json={"starts": "08:00", "ends": "09:00",
                                                                   "district": "Jung-goo"}),
    ]
    for ask in asks:
        response = await ask
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        detail = response.json()["detail"]
        assert "unknown district 'Jung-goo'" in detail and "Jung-gu" in detail and "/api/v1/districts" in detail
    # A district of decommissioned devices only is still known: their history is filtered by it.
    known = await seoul.client.get("/api/v1/devices", params={"district": "Jung-gu", "status": "decommissioned"})
    assert known.status_code == 200 and known.json()["items"] == []
