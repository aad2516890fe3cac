"""Bulk import over real HTTP: all or nothing, row-numbered errors, duplicates, malformed input, 10k rows."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time

import httpx
import pytest

from fleet.access.models import Role

IMPORT = "/api/v1/devices/import"
CSV = {"content-type": "text/csv"}
GEOJSON = {"content-type": "application/geo+json"}
HEADER = ("kind,endpoint,serial,lat,lon,district,tags,installed_at,status,"
          "nominal_wattage,lamp_type,capacity_litres,waste_kind,ssid,band")


def csv_body(*lines: str) -> str:
    return "\n".join([HEADER, *lines]) + "\n"


GOOD_ROWS = (
    "streetlight,sl-1,SN-1,37.5665,126.978,Jung-gu,main-road;lit,2024-03-01,,90,led,,,,",
    "waste_bin,wb-1,SN-2,37.57,126.98,Jongno-gu,,,maintenance,,,240,paper,,",
    "wifi_ap,ap-1,,37.58,126.99,,,2024-03-01T09:30:00+09:00,,,,,,Seoul_Free,dual",
)


def feature(name: str, coordinates: tuple = (126.978, 37.5665), **properties) -> dict:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": list(coordinates)},
            "properties": {"kind": "streetlight", "endpoint": name, **properties}}


def collection(*features) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


async def stored(db, table: str) -> int:
    async with db.system_tx() as conn:
        return await conn.fetchval(f"select count(*) from {table}")  # noqa: S608 - fixed names


async def assert_nothing_stored(db, devices: int = 0, audit_entries: int | None = None) -> None:
    assert await stored(db, "devices") == devices
    if audit_entries is not None:
        assert await stored(db, "audit_log") == audit_entries


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    return body


def errors_of(body: dict) -> set[tuple]:
    return {(e["field"], e.get("row")) for e in body.get("errors", [])}


async def test_csv_import_creates_every_row_with_audit(seoul, db):
    audit_before = await stored(db, "audit_log")
    response = await seoul.client.post(IMPORT, content=csv_body(*GOOD_ROWS), headers=CSV)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["created"] == 3 and len(result["ids"]) == 3
    devices = {d["endpoint"]: d for d in (await seoul.client.get("/api/v1/devices")).json()["items"]}
    assert set(devices) == {"sl-1", "wb-1", "ap-1"}
    assert {d["id"] for d in devices.values()} == set(result["ids"])
    light, bin_, ap = devices["sl-1"], devices["wb-1"], devices["ap-1"]
    assert (light["tags"], light["nominal_wattage"], light["lamp_type"]) == (["main-road", "lit"], 90, "led")
    assert light["installed_at"].startswith("2024-03-01T00:00:00")
    assert (bin_["status"], bin_["capacity_litres"], bin_["waste_kind"]) == ("maintenance", 240, "paper")
    assert (ap["ssid"], ap["band"], ap.get("serial")) == ("Seoul_Free", "dual", None)
    audit = (await seoul.client.get("/api/v1/audit", params={"action": "device.create"})).json()["items"]
    assert {e["entity_id"] for e in audit} == set(result["ids"])
    assert all(e["api_key_id"] == str(seoul.principal.api_key_id) and e["after"]["endpoint"] in devices
               for e in audit)
    assert await stored(db, "audit_log") == audit_before + 3


async def test_geojson_import(seoul):
    body = collection(feature("sl-1", serial="A", tags=["x", "y"], nominal_wattage=60),
                      feature("wb-1", kind="waste_bin", capacity_litres=120, coordinates=(127.0, 37.6)))
    response = await seoul.client.post(IMPORT, content=body, headers=GEOJSON)
    assert response.status_code == 201, response.text
    assert response.json()["created"] == 2
    devices = {d["endpoint"]: d for d in (await seoul.client.get("/api/v1/devices")).json()["items"]}
    assert devices["sl-1"]["tags"] == ["x", "y"] and devices["sl-1"]["nominal_wattage"] == 60
    assert devices["wb-1"]["location"] == {"lat": 37.6, "lon": 127.0}


async def test_every_bad_row_is_reported_and_nothing_is_stored(seoul, db):
    audit_before = await stored(db, "audit_log")
    body = csv_body(
        GOOD_ROWS[0],
        "streetlight,sl-2,,91,126.9,,,,,,,,,,",           # row 3: lat out of range
        "toaster,sl-3,,37.5,126.9,,,,,,,,,,",              # row 4: unknown kind
        "streetlight,bad endpoint,,37.5,126.9,,,,decommissioned,,,,,,",  # row 5: endpoint and status
        "streetlight,sl-4,,37.5,,,,not-a-date,,,,240,,,",  # row 6: lon, installed_at, capacity
    )
    problem = assert_problem(await seoul.client.post(IMPORT, content=body, headers=CSV), 422)
    assert errors_of(problem) == {("lat", 3), ("kind", 4), ("endpoint", 5), ("status", 5),
                                  ("lon", 6), ("installed_at", 6), ("capacity_litres", 6)}
    assert all(e["message"] for e in problem["errors"])
    await assert_nothing_stored(db, audit_entries=audit_before)


async def test_row_numbers_are_spreadsheet_rows(seoul):
    """Blank lines count as rows, and a quoted cell spanning lines is still one row."""
    body = csv_body('streetlight,sl-1,,37.5,126.9,,,,,,,,,,',
                    '',
                    'streetlight,sl-2,,37.5,126.9,,,,,,,,,,',
                    'streetlight,sl-3,"multi\nline serial",37.5,126.9,,,,,,,,,,',
                    'streetlight,sl-4,,999,126.9,,,,,,,,,,')
    problem = assert_problem(await seoul.client.post(IMPORT, content=body, headers=CSV), 422)
    assert errors_of(problem) == {("serial", 5), ("lat", 6)}


async def test_duplicates_within_the_file(seoul, db):
    body = csv_body("streetlight,sl-1,SN-1,37.5,126.9,,,,,,,,,,",
                    "streetlight,sl-2,SN-1,37.5,126.9,,,,,,,,,,",
                    "streetlight,sl-1,SN-3,37.5,126.9,,,,,,,,,,",
                    "streetlight,sl-4,,999,126.9,,,,,,,,,,")
    problem = assert_problem(await seoul.client.post(IMPORT, content=body, headers=CSV), 422)
    assert errors_of(problem) == {("serial", 3), ("endpoint", 4), ("lat", 5)}
    messages = {(e["field"], e["row"]): e["message"] for e in problem["errors"]}
    assert "row 2" in messages[("serial", 3)] and "row 2" in messages[("endpoint", 4)]
    await assert_nothing_stored(db)


async def test_duplicates_against_the_database_of_this_city(seoul, db):
    first = await seoul.client.post(IMPORT, content=csv_body(*GOOD_ROWS), headers=CSV)
    assert first.status_code == 201
    audit_before = await stored(db, "audit_log")
    body = csv_body("streetlight,new-1,SN-9,37.5,126.9,,,,,,,,,,",
                    "streetlight,sl-1,SN-8,37.5,126.9,,,,,,,,,,",
                    "streetlight,new-2,SN-2,37.5,126.9,,,,,,,,,,")
    problem = assert_problem(await seoul.client.post(IMPORT, content=body, headers=CSV), 409)
    assert errors_of(problem) == {("endpoint", 3), ("serial", 4)}
    await assert_nothing_stored(db, devices=3, audit_entries=audit_before)


async def test_endpoint_of_another_city_is_rejected_without_revealing_it(seoul, busan, db):
    theirs = await busan.client.post("/api/v1/devices", json={
        "kind": "streetlight", "endpoint": "shared-name", "serial": "BUSAN-SERIAL",
        "location": {"lat": 35.1796, "lon": 129.0756}, "district": "Haeundae-gu"})
    assert theirs.status_code == 201
    busan_device = theirs.json()
    # The same serial in another city is fine: serials are unique per city.
    body = csv_body("streetlight,mine-1,BUSAN-SERIAL,37.5,126.9,,,,,,,,,,",
                    "streetlight,shared-name,SN-1,37.5,126.9,,,,,,,,,,")
    response = await seoul.client.post(IMPORT, content=body, headers=CSV)
    problem = assert_problem(response, 409)
    assert errors_of(problem) == {("endpoint", 3)}
    # Exactly what a duplicate inside our own city would say: nothing about whose it is.
    assert problem["errors"][0]["message"] == "already exists"
    for secret in ("busan", "Busan", "Haeundae", busan_device["id"], str(busan.tenant_id), "35.1796"):
        assert secret not in response.text
    await assert_nothing_stored(db, devices=1)


@pytest.mark.parametrize("header, fields", [
    ("kind,endpoint,lat,lon,colour", {("colour", 1)}),
    ("kind,endpoint,lat,lon,lat", {("lat", 1)}),
    ("kind,endpoint,lat,lon,secret_column,another", {("secret_column", 1), ("another", 1)}),
])
async def test_unknown_or_repeated_columns(seoul, db, header, fields):
    values = ",".join(["streetlight", "sl-1", "37.5", "126.9", *[""] * (header.count(",") - 3)])
    body = f"{header}\n{values}\n"
    problem = assert_problem(await seoul.client.post(IMPORT, content=body, headers=CSV), 422)
    assert errors_of(problem) == fields
    await assert_nothing_stored(db)


@pytest.mark.parametrize("body", [
    b"",
    b"\n\n",
    HEADER.encode() + b"\n",
    HEADER.encode() + b"\nstreetlight,sl-1,SN-1\n",                      # too few values
    HEADER.encode() + b"\nstreetlight,sl-1" + b",x" * 30 + b"\n",          # too many values
    HEADER.encode() + b'\nstreetlight,"sl-1,,37.5,126.9,,,,,,,,,,\n',      # unterminated quote
    HEADER.encode() + b"\nstreetlight,sl\x00-1,,37.5,126.9,,,,,,,,,,\n",   # NUL byte
    "kind,endpoint,lat,lon\nstreetlight,é,37.5,126.9\n".encode("latin-1"),  # not UTF-8
    b"\xff\xfe" + "kind,endpoint,lat,lon\n".encode("utf-16-le"),          # UTF-16
    b'{"type": "FeatureCollection", "features": []}',
], ids=["empty", "blank-lines", "header-only", "few-values", "many-values", "open-quote", "nul",
        "latin-1", "utf-16", "json-as-csv"])
async def test_malformed_csv_is_4xx_and_stores_nothing(seoul, db, body):
    response = await seoul.client.post(IMPORT, content=body, headers=CSV)
    problem = assert_problem(response, 422)
    assert problem["errors"] and all(e["field"] and e["message"] for e in problem["errors"])
    await assert_nothing_stored(db)


@pytest.mark.parametrize("body, fields", [
    (b"", {("body", None)}),
    (b"{", {("body", None)}),
    (b"[]", {("body", None)}),
    (b'{"type": "Feature"}', {("body", None)}),
    (b'{"type": "FeatureCollection", "features": {}}', {("body", None)}),
    (b'{"type": "FeatureCollection", "features": []}', {("body", None)}),
    (collection("not a feature"), {("geometry", 1)}),
    (collection(feature("sl-1"), {**feature("sl-2"), "geometry": None}), {("geometry", 2)}),
    (collection({**feature("sl-1"), "geometry": {"type": "LineString", "coordinates": [[1, 2], [3, 4]]}}),
     {("geometry", 1)}),
    (collection({**feature("sl-1"), "geometry": {"type": "Point", "coordinates": [1]}}), {("geometry", 1)}),
    (collection({**feature("sl-1"), "properties": None}), {("properties", 1)}),
    (collection({**feature("sl-1"), "properties": ["kind"]}), {("properties", 1)}),
    (collection(feature("sl-1", colour="red", lat=1)), {("colour", 1), ("lat", 1)}),
    (collection(feature("sl-1", coordinates=("east", None))), {("lon", 1), ("lat", 1)}),
    (collection(feature("sl-1", coordinates=([1, 2], {"a": 1}))), {("lon", 1), ("lat", 1)}),
    # RFC 7946: numbers, not strings that look like them.
    (collection(feature("sl-1", coordinates=("126.978", "37.5665"))), {("lon", 1), ("lat", 1)}),
    (collection(feature("sl-1"), feature("sl-2", coordinates=(126.978, "37.5665"))), {("lat", 2)}),
    (collection(feature("sl-1", coordinates=(True, 37.5))), {("lon", 1)}),
    (collection(feature("sl-1", kind=5, endpoint=["x"])), {("kind", 1), ("endpoint", 1)}),
    (collection(feature("sl-1", tags="a|b", serial=7, installed_at=20240101)),
     {("serial", 1), ("installed_at", 1)}),
    (collection(feature("sl-1", tags=[1, 2], nominal_wattage=True)), {("tags", 1), ("nominal_wattage", 1)}),
    (collection(feature("sl-1", tags={"a": 1}, ssid="x")), {("tags", 1), ("ssid", 1)}),
    (collection(feature("sl-1", nominal_wattage=10**30)), {("nominal_wattage", 1)}),
    (collection(feature("wb-1", kind="waste_bin", capacity_litres=120.5)), {("capacity_litres", 1)}),
])
async def test_malformed_geojson_is_422_with_feature_numbers(seoul, db, body, fields):
    problem = assert_problem(await seoul.client.post(IMPORT, content=body, headers=GEOJSON), 422)
    assert errors_of(problem) == fields
    await assert_nothing_stored(db)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml", "multipart/form-data",
                                          "application/x-www-form-urlencoded", "text/csv-but-not"])
async def test_wrong_content_type_is_4xx(seoul, db, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = await seoul.client.post(IMPORT, content=csv_body(*GOOD_ROWS), headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    await assert_nothing_stored(db)


async def test_content_type_parameters_are_accepted(seoul):
    response = await seoul.client.post(IMPORT, content=csv_body(*GOOD_ROWS),
                                       headers={"content-type": "Text/CSV; charset=utf-8; header=present"})
    assert response.status_code == 201, response.text


async def test_readers_and_crews_may_not_import(seoul, city_factory, db):
    for role in (Role.VIEWER, Role.CREW):
        city = await city_factory(f"daegu-{role.value}", role)
        response = await city.client.post(IMPORT, content=csv_body(*GOOD_ROWS), headers=CSV)
        assert_problem(response, 403)
    operator = await city_factory("incheon", Role.OPERATOR)
    assert (await operator.client.post(IMPORT, content=csv_body(*GOOD_ROWS), headers=CSV)).status_code == 201


async def test_body_over_the_limit_is_413(seoul, db):
    body = csv_body(*GOOD_ROWS) + "#" * (4 * 1024 * 1024)
    assert_problem(await seoul.client.post(IMPORT, content=body, headers=CSV), 413)

    async def chunked():
        yield csv_body(*GOOD_ROWS).encode()
        for _ in range(80):
            yield b"#" * 65536

    assert_problem(await seoul.client.post(IMPORT, content=chunked(), headers=CSV), 413)
    await assert_nothing_stored(db)


def ten_thousand_rows() -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["kind", "endpoint", "serial", "lat", "lon", "district", "tags", "installed_at",
                     "nominal_wattage", "lamp_type", "pole_number", "capacity_litres", "waste_kind"])
    for n in range(10_000):
        lat, lon = 37.45 + (n % 100) * 0.002, 126.85 + (n // 100) * 0.002
        if n % 4:
            writer.writerow(["streetlight", f"urn:dev:sl:{n:06d}", f"SL{n:06d}", f"{lat:.6f}", f"{lon:.6f}",
                             f"district-{n % 25}", "main-road;led", "2023-05-01", 90 + n % 60, "led",
                             f"P-{n}", "", ""])
        else:
            writer.writerow(["waste_bin", f"urn:dev:wb:{n:06d}", f"WB{n:06d}", f"{lat:.6f}", f"{lon:.6f}",
                             f"district-{n % 25}", "", "", "", "", "", 240, "paper"])
    return buffer.getvalue()


async def test_ten_thousand_rows(seoul, db, capsys):
    body = ten_thousand_rows()
    audit_before = await stored(db, "audit_log")
    started = time.perf_counter()
    response = await seoul.client.post(IMPORT, content=body, headers=CSV, timeout=120)
    elapsed = time.perf_counter() - started
    assert response.status_code == 201, response.text[:2000]
    assert response.json()["created"] == 10_000
    with capsys.disabled():
        print(f"\n10,000-row CSV import ({len(body) / 1e6:.1f} MB): {elapsed:.2f} s")
    assert await stored(db, "devices") == 10_000
    assert await stored(db, "audit_log") == audit_before + 10_000
    # One more row than the file had, over a taken endpoint: the whole file is refused again.
    again = body + "streetlight,brand-new,NEW,37.5,126.9,,,,,,,,\n"
    response = await seoul.client.post(IMPORT, content=again, headers=CSV, timeout=120)
    problem = assert_problem(response, 409)
    assert len(problem["errors"]) == 20_000
    assert await stored(db, "devices") == 10_000


async def test_network_statuses_from_an_export_start_provisioned(seoul):
    """A live city's export says online/offline; the network decides that, so imports start over."""
    body = csv_body("streetlight,sl-1,,37.5,126.9,,,,online,,,,,,",
                    "streetlight,sl-2,,37.5,126.9,,,,offline,,,,,,",
                    "streetlight,sl-3,,37.5,126.9,,,,maintenance,,,,,,")
    response = await seoul.client.post(IMPORT, content=body, headers=CSV)
    assert response.status_code == 201, response.text
    devices = {d["endpoint"]: d["status"] for d in (await seoul.client.get("/api/v1/devices")).json()["items"]}
    assert devices == {"sl-1": "provisioned", "sl-2": "provisioned", "sl-3": "maintenance"}


async def test_formula_cells_are_defused_on_export_and_restored_on_import(seoul, busan):
    created = await seoul.client.post("/api/v1/devices", json={
        "kind": "wifi_ap", "endpoint": "ap-1", "location": {"lat": 37.5, "lon": 126.9},
        "address": "=HYPERLINK(\"http://evil\")", "ssid": "Seoul"})
    assert created.status_code == 201
    export = (await seoul.client.get("/api/v1/devices/export?format=csv")).text
    assert "'=HYPERLINK" in export
    body = export.replace("ap-1", "ap-2")
    assert (await busan.client.post(IMPORT, content=body, headers=CSV)).status_code == 201
    imported = (await busan.client.get("/api/v1/devices")).json()["items"][0]
    assert imported["address"] == "=HYPERLINK(\"http://evil\")"


async def test_the_api_answers_while_a_large_import_is_parsed(seoul):
    # 50,000 rows, every one refused (latitude 91): the request is all parsing and validating.
    body = "kind,endpoint,lat,lon\n" + "".join(f"streetlight,sl-{n},91,126.9\n" for n in range(50_000))
    importing = asyncio.create_task(seoul.client.post(IMPORT, content=body, headers=CSV, timeout=300))
    async with httpx.AsyncClient(base_url=str(seoul.client.base_url)) as probe:
        healthy = await probe.get("/healthz")
        answered_first = not importing.done()
    assert healthy.status_code == 200
    problem = assert_problem(await importing, 422)
    assert len(problem["errors"]) == 50_000
    assert answered_first
