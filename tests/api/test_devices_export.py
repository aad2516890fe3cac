"""Export over real HTTP: CSV and GeoJSON round-trip into another city, filters, and the tenant wall."""

from __future__ import annotations

import csv
import io
import json

import pytest

EXPORT = "/api/v1/devices/export"
IMPORT = "/api/v1/devices/import"

SEOUL_DEVICES = [
    {"kind": "streetlight", "endpoint": "sl-1", "serial": "SN-1", "manufacturer": "Lumen Co",
     "model": "L-90", "firmware_version": "1.2.3", "location": {"lat": 37.5665, "lon": 126.978},
     "district": "Jung-gu", "address": '1 Sejong-daero, "City Hall", Seoul',
     "installed_at": "2023-05-01T09:30:00+09:00", "tags": ["main-road", "led"],
     "nominal_wattage": 90.5, "pole_number": "P-1", "lamp_type": "led"},
    {"kind": "streetlight", "endpoint": "urn:dev:mac:0024befffe804ff1", "location": {"lat": 37.57, "lon": 126.98},
     "status": "maintenance", "lamp_type": "high_pressure_sodium"},
    {"kind": "waste_bin", "endpoint": "wb-1", "serial": "SN-2", "location": {"lat": -33.868, "lon": 151.209},
     "district": "Jongno-gu", "capacity_litres": 240, "waste_kind": "paper", "tags": ["smart"]},
    {"kind": "wifi_ap", "endpoint": "ap-1", "location": {"lat": 37.58123456789, "lon": 126.99},
     "ssid": "Seoul Free Wi-Fi, 무료", "band": "dual"},
]
# Identity, timestamps set by the server, and the names we change on the way over.
NOT_COMPARED = {"id", "endpoint", "serial", "created_at", "updated_at"}


async def fill(city, devices=SEOUL_DEVICES) -> list[dict]:
    created = []
    for body in devices:
        response = await city.client.post("/api/v1/devices", json=body)
        assert response.status_code == 201, response.text
        created.append(response.json())
    return created


async def devices_of(city) -> dict[str, dict]:
    items = (await city.client.get("/api/v1/devices", params={"limit": 1000})).json()["items"]
    return {d["endpoint"]: d for d in items}


def comparable(device: dict) -> dict:
    return {k: v for k, v in device.items() if k not in NOT_COMPARED}


def renamed(name: str) -> str:
    return f"copy-{name}"


async def test_csv_round_trip_into_another_city(seoul, busan, city_factory):
    await fill(seoul)
    await fill(busan, [{"kind": "streetlight", "endpoint": "busan-only", "location": {"lat": 35.1, "lon": 129.0}}])
    response = await seoul.client.get(EXPORT, params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"  # charset once
    assert "attachment" in response.headers["content-disposition"]
    assert "busan-only" not in response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(SEOUL_DEVICES)
    # Another city takes the same file once the globally unique names are changed.
    for row in rows:
        row["endpoint"] = renamed(row["endpoint"])
        row["serial"] = row["serial"] and renamed(row["serial"])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    daegu = await city_factory("daegu")
    imported = await daegu.client.post(IMPORT, content=out.getvalue().encode(),
                                       headers={"content-type": "text/csv"})
    assert imported.status_code == 201, imported.text
    original, copied = await devices_of(seoul), await devices_of(daegu)
    assert set(copied) == {renamed(e) for e in original}
    for endpoint, device in original.items():
        copy = copied[renamed(endpoint)]
        assert comparable(copy) == comparable(device)
        assert copy.get("serial") == (renamed(device["serial"]) if device.get("serial") else None)
        assert copy["id"] != device["id"]


async def test_export_unchanged_is_refused_whole_by_another_city(seoul, busan):
    await fill(seoul)
    exported = (await seoul.client.get(EXPORT)).text
    response = await busan.client.post(IMPORT, content=exported.encode(), headers={"content-type": "text/csv"})
    assert response.status_code == 409
    assert {e["field"] for e in response.json()["errors"]} == {"endpoint"}
    assert await devices_of(busan) == {}


async def test_geojson_is_a_feature_collection_and_round_trips(seoul, busan, city_factory):
    created = await fill(seoul)
    await fill(busan, [{"kind": "wifi_ap", "endpoint": "busan-ap", "location": {"lat": 35.1, "lon": 129.0}}])
    response = await seoul.client.get(EXPORT, params={"format": "geojson"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/geo+json")
    doc = json.loads(response.content)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(SEOUL_DEVICES)
    by_id = {d["id"]: d for d in created}
    for item in doc["features"]:
        assert item["type"] == "Feature"
        device = by_id[item["id"]]
        assert item["geometry"] == {"type": "Point",
                                    "coordinates": [device["location"]["lon"], device["location"]["lat"]]}
        assert item["properties"]["endpoint"] == device["endpoint"]
        assert isinstance(item["properties"]["tags"], list)
    assert "busan-ap" not in response.text
    for item in doc["features"]:
        item["properties"]["endpoint"] = renamed(item["properties"]["endpoint"])
        if "serial" in item["properties"]:
            item["properties"]["serial"] = renamed(item["properties"]["serial"])
    daegu = await city_factory("daegu")
    imported = await daegu.client.post(IMPORT, content=json.dumps(doc).encode(),
                                       headers={"content-type": "application/geo+json"})
    assert imported.status_code == 201, imported.text
    original, copied = await devices_of(seoul), await devices_of(daegu)
    assert {renamed(e): comparable(d) for e, d in original.items()} == {
        e: comparable(d) for e, d in copied.items()}


async def test_filters_apply_to_the_export(seoul):
    await fill(seoul)
    waste = await seoul.client.get(EXPORT, params={"format": "csv", "kind": "waste_bin"})
    assert [r["endpoint"] for r in csv.DictReader(io.StringIO(waste.text))] == ["wb-1"]
    tagged = json.loads((await seoul.client.get(EXPORT, params={"format": "geojson", "tag": "led"})).content)
    assert [f["properties"]["endpoint"] for f in tagged["features"]] == ["sl-1"]
    near = await seoul.client.get(EXPORT, params={"near": "37.5665,126.978", "radius_m": 100})
    assert [r["endpoint"] for r in csv.DictReader(io.StringIO(near.text))] == ["sl-1"]
    nothing = await seoul.client.get(EXPORT, params={"firmware": "none-such"})
    assert nothing.status_code == 200 and nothing.text.count("\n") == 1  # the header alone
    empty = await seoul.client.get(EXPORT, params={"format": "geojson", "firmware": "none-such"})
    assert json.loads(empty.content) == {"type": "FeatureCollection", "features": []}
    unknown = await seoul.client.get(EXPORT, params={"district": "Nowhere"})
    assert unknown.status_code == 422 and "unknown district 'Nowhere'" in unknown.json()["detail"]


async def test_decommissioned_devices_leave_the_default_export(seoul):
    created = await fill(seoul)
    assert (await seoul.client.delete(f"/api/v1/devices/{created[0]['id']}")).status_code == 200
    rows = list(csv.DictReader(io.StringIO((await seoul.client.get(EXPORT)).text)))
    assert created[0]["endpoint"] not in {r["endpoint"] for r in rows}
    gone = list(csv.DictReader(io.StringIO(
        (await seoul.client.get(EXPORT, params={"status": "decommissioned"})).text)))
    assert [r["endpoint"] for r in gone] == [created[0]["endpoint"]]


async def test_export_streams_many_devices(seoul):
    lines = ["kind,endpoint,lat,lon"] + [f"streetlight,sl-{n:05d},37.5,126.9" for n in range(2500)]
    response = await seoul.client.post(IMPORT, content="\n".join(lines).encode(),
                                       headers={"content-type": "text/csv"})
    assert response.status_code == 201
    rows = list(csv.DictReader(io.StringIO((await seoul.client.get(EXPORT)).text)))
    assert [r["endpoint"] for r in rows] == [f"sl-{n:05d}" for n in range(2500)]
    doc = json.loads((await seoul.client.get(EXPORT, params={"format": "geojson"})).content)
    assert len(doc["features"]) == 2500


@pytest.mark.parametrize("params, status", [
    ({"format": "xml"}, 400),
    ({"format": ""}, 400),
    ({"kind": "toaster"}, 422),
    ({"bbox": "1,2"}, 422),
    ({"near": "91,0"}, 422),
    ({"radius_m": "10"}, 422),
    ({"group_id": "not-a-uuid"}, 422),
    ({"group_id": "00000000-0000-0000-0000-000000000000"}, 404),
])
async def test_bad_export_parameters_are_problems(seoul, params, status):
    await fill(seoul, SEOUL_DEVICES[:1])
    response = await seoul.client.get(EXPORT, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
