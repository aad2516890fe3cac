"""Device registry over real HTTP: create, read, change, decommission, list, errors."""

from __future__ import annotations

import pytest

STREETLIGHT = {"kind": "streetlight", "endpoint": "sl-0001", "serial": "SN-1",
               "location": {"lat": 37.5665, "lon": 126.9780}, "district": "Jung-gu",
               "tags": ["main-road"], "nominal_wattage": 90, "lamp_type": "led", "pole_number": "P-1"}


async def test_create_then_get(seoul):
    created = await seoul.client.post("/api/v1/devices", json=STREETLIGHT)
    assert created.status_code == 201, created.text
    device = created.json()
    assert device["id"] and device["status"] == "provisioned"
    assert device["nominal_wattage"] == 90 and device["location"] == STREETLIGHT["location"]
    fetched = await seoul.client.get(f"/api/v1/devices/{device['id']}")
    assert fetched.status_code == 200 and fetched.json() == device


async def test_duplicate_endpoint_and_serial_conflict(seoul, busan):
    assert (await seoul.client.post("/api/v1/devices", json=STREETLIGHT)).status_code == 201
    same_serial = {**STREETLIGHT, "endpoint": "sl-0002"}
    response = await seoul.client.post("/api/v1/devices", json=same_serial)
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    # Endpoints are unique across cities: devices register by name alone.
    response = await busan.client.post("/api/v1/devices", json={**STREETLIGHT, "serial": "other"})
    assert response.status_code == 409


@pytest.mark.parametrize("body, field", [
    ({**STREETLIGHT, "location": {"lat": 91, "lon": 0}}, "location.lat"),
    ({**STREETLIGHT, "kind": "toaster"}, "kind"),
    ({**STREETLIGHT, "endpoint": ""}, "endpoint"),
    ({**STREETLIGHT, "lamp_type": "candle"}, "lamp_type"),
    ({**STREETLIGHT, "unknown": 1}, "unknown"),
])
async def test_malformed_bodies_name_the_field(seoul, body, field):
    response = await seoul.client.post("/api/v1/devices", json=body)
    assert response.status_code in (400, 422)
    problem = response.json()
    assert problem["status"] == response.status_code
    assert any(field in e["field"] or field in e["message"] for e in problem["errors"]), problem


async def test_domain_validation_is_422_with_fields(seoul):
    body = {**STREETLIGHT, "capacity_litres": 240, "endpoint": "bad endpoint"}
    response = await seoul.client.post("/api/v1/devices", json=body)
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"capacity_litres", "endpoint"}


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b'{"kind": 5}', "é".encode("latin-1")])
async def test_garbage_is_400_never_500(seoul, raw):
    response = await seoul.client.post("/api/v1/devices", content=raw,
                                       headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text


async def test_patch_and_decommission_keep_history(seoul):
    device = (await seoul.client.post("/api/v1/devices", json=STREETLIGHT)).json()
    patched = await seoul.client.patch(f"/api/v1/devices/{device['id']}",
                                       json={"district": "Jongno-gu", "status": "maintenance",
                                             "nominal_wattage": 120, "tags": []})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["district"], body["status"], body["nominal_wattage"], body["tags"]) == (
        "Jongno-gu", "maintenance", 120, [])
    bad = await seoul.client.patch(f"/api/v1/devices/{device['id']}", json={"status": "online"})
    assert bad.status_code == 400
    gone = await seoul.client.delete(f"/api/v1/devices/{device['id']}")
    assert gone.status_code == 200 and gone.json()["status"] == "decommissioned"
    assert (await seoul.client.get(f"/api/v1/devices/{device['id']}")).json()["status"] == "decommissioned"
    listed = (await seoul.client.get("/api/v1/devices")).json()["items"]
    assert listed == []
    listed = (await seoul.client.get("/api/v1/devices?status=decommissioned")).json()["items"]
    assert [d["id"] for d in listed] == [device["id"]]
    audit = (await seoul.client.get(f"/api/v1/audit?entity_id={device['id']}")).json()["items"]
    assert [e["action"] for e in audit] == ["device.decommission", "device.update", "device.create"]
    assert audit[1]["before"]["district"] == "Jung-gu" and audit[1]["after"]["district"] == "Jongno-gu"


async def test_list_filters_and_cursor_pages(seoul):
    for n in range(25):
        body = {**STREETLIGHT, "endpoint": f"sl-{n:04d}", "serial": f"S{n}",
                "district": "Mapo-gu" if n % 2 else "Jung-gu",
                "location": {"lat": 37.55 + n * 0.001, "lon": 126.95}}
        assert (await seoul.client.post("/api/v1/devices", json=body)).status_code == 201
    seen, cursor = [], None
    while True:
        params = {"district": "Mapo-gu", "limit": 5} | ({"cursor": cursor} if cursor else {})
        page = (await seoul.client.get("/api/v1/devices", params=params)).json()
        seen += [d["endpoint"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"sl-{n:04d}" for n in range(1, 25, 2)]
    near = (await seoul.client.get("/api/v1/devices", params={"near": "37.55,126.95", "radius_m": 250})).json()
    assert {d["endpoint"] for d in near["items"]} == {"sl-0000", "sl-0001", "sl-0002"}
    assert all(d["distance_m"] <= 250 for d in near["items"])
    # Nearest first, in whole metres, and the cursor pages keep that order (from the far end).
    walked, cursor = [], None
    while True:
        params = {"near": "37.575,126.95", "radius_m": 5000, "limit": 4} | ({"cursor": cursor} if cursor else {})
        page = (await seoul.client.get("/api/v1/devices", params=params)).json()
        walked += [(d["distance_m"], d["endpoint"]) for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(walked) == 25 and len({e for _, e in walked}) == 25
    assert [m for m, _ in walked] == sorted(m for m, _ in walked) and all(type(m) is int for m, _ in walked)
    assert walked[0][1] == "sl-0024" and walked[-1][1] == "sl-0000"
    boxed = (await seoul.client.get("/api/v1/devices", params={"bbox": "126.94,37.5595,126.96,37.5625"})).json()
    assert {d["endpoint"] for d in boxed["items"]} == {"sl-0010", "sl-0011", "sl-0012"}
    bad = await seoul.client.get("/api/v1/devices", params={"bbox": "1,2,3", "cursor": "zzz"})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} >= {"bbox"}


async def test_auth_required_and_roles(seoul, city_factory):
    import httpx
    anonymous = httpx.AsyncClient(base_url=str(seoul.client.base_url))
    response = await anonymous.get("/api/v1/devices")
    assert response.status_code == 401 and response.json()["status"] == 401
    response = await anonymous.get("/api/v1/devices", headers={"Authorization": "Bearer fleet_nope"})
    assert response.status_code == 401
    await anonymous.aclose()
    from fleet.access.models import Role
    viewer = await city_factory("daegu", Role.VIEWER)
    assert (await viewer.client.get("/api/v1/devices")).status_code == 200
    assert (await viewer.client.post("/api/v1/devices", json=STREETLIGHT)).status_code == 403
    assert (await viewer.client.get("/api/v1/audit")).status_code == 403
