"""Error responses over real HTTP: every failure is a problem+json 4xx, never a 500 from bad input."""

from __future__ import annotations

import uuid

import httpx
import pytest

from fleet.db import Database, database
from tests.conftest import make_city, serve_api

PROBLEM = "application/problem+json"
LIGHT = {"kind": "streetlight", "endpoint": "sl-1", "location": {"lat": 37.5665, "lon": 126.978}}


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and "detail" in body
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_body_over_the_limit_is_413(seoul):
    big = {**LIGHT, "address": "x" * (5 * 1024 * 1024)}
    assert_problem(await seoul.client.post("/api/v1/devices", json=big), 413)
    assert_problem(await seoul.client.post("/api/v1/apikeys", content=b"{" + b" " * (5 * 1024 * 1024) + b"}",
                                           headers={"content-type": "application/json"}), 413)
    # Just under the limit is read (and refused for what it says, not for its size).
    near = await seoul.client.post("/api/v1/devices", json={**LIGHT, "address": "x" * (3 * 1024 * 1024)})
    assert_problem(near, 422)


async def test_unknown_routes_and_ids_are_404(seoul):
    for path in ("/nope", "/api/v1/nope", "/api/v2/devices", "/api/v1/devices/x/y"):
        assert_problem(await seoul.client.get(path), 404)
    for path in (f"/api/v1/devices/{uuid.uuid4()}", f"/api/v1/groups/{uuid.uuid4()}"):
        assert_problem(await seoul.client.get(path), 404)
    assert_problem(await seoul.client.patch(f"/api/v1/devices/{uuid.uuid4()}", json={"district": "x"}), 404)
    assert_problem(await seoul.client.delete(f"/api/v1/devices/{uuid.uuid4()}"), 404)
    assert_problem(await seoul.client.delete(f"/api/v1/apikeys/{uuid.uuid4()}"), 404)


async def test_other_citys_ids_look_unknown(seoul, busan):
    theirs = (await busan.client.post("/api/v1/devices", json=LIGHT)).json()
    for method in ("GET", "DELETE"):
        body = assert_problem(await seoul.client.request(method, f"/api/v1/devices/{theirs['id']}"), 404)
        assert "busan" not in str(body)
    assert_problem(await seoul.client.patch(f"/api/v1/devices/{theirs['id']}", json={"district": "x"}), 404)
    assert (await busan.client.get(f"/api/v1/devices/{theirs['id']}")).json()["status"] == "provisioned"


@pytest.mark.parametrize("path", ["/api/v1/devices/not-a-uuid", "/api/v1/devices/1234",
                                  "/api/v1/devices/00000000-0000-0000-0000-00000000000g",
                                  "/api/v1/apikeys/xyz", "/api/v1/groups/%00"])
async def test_invalid_uuid_in_path_is_a_4xx(seoul, path):
    response = await seoul.client.get(path)
    assert response.status_code in (400, 404, 405), response.text
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_a_non_uuid_id_is_400_naming_the_parameter(seoul):
    for path, name, value in (("/api/v1/devices/not-a-uuid", "device_id", "not-a-uuid"),
                              ("/api/v1/devices/not-a-uuid/commands", "device_id", "not-a-uuid"),
                              ("/api/v1/groups/1234/members", "group_id", "1234"),
                              ("/api/v1/lighting/programs/x", "program_id", "x")):
        body = assert_problem(await seoul.client.get(path), 400)
        assert body["detail"] == f"path parameter '{name}' must be a UUID, got '{value}'"
        assert body["errors"] == [{"field": name, "message": f"must be a UUID, got '{value}'"}]
    body = assert_problem(await seoul.client.patch("/api/v1/devices/abc", json={"district": "x"}), 400)
    assert body["detail"] == "path parameter 'device_id' must be a UUID, got 'abc'"
    for path, name in (("/api/v1/audit", "api_key_id"), ("/api/v1/lighting/preview", "device_id")):
        body = assert_problem(await seoul.client.get(path, params={name: "nope"}), 400)
        assert body["detail"] == f"query parameter '{name}' must be a UUID, got 'nope'"
        assert body["errors"] == [{"field": name, "message": "must be a UUID, got 'nope'"}]


async def test_a_body_names_each_field_at_fault(seoul):
    missing = assert_problem(await seoul.client.post("/api/v1/devices", json={
        "kind": "streetlight", "location": {"lat": 37.5}}), 400)
    assert missing["errors"] == [{"field": "location.lon", "message": "Object missing required field `lon`"},
                                 {"field": "endpoint", "message": "Object missing required field `endpoint`"}]
    assert missing["detail"] == "location.lon: Object missing required field `lon`"
    wrong = assert_problem(await seoul.client.post("/api/v1/devices", json={
        "kind": "streetlight", "endpoint": 7, "location": {"lat": "north", "lon": "east"}, "tags": ["a", 2]}), 400)
    assert [(e["field"], e["message"]) for e in wrong["errors"]] == [
        ("endpoint", "Expected `str`, got `int`"), ("location.lat", "Expected `float`, got `str`"),
        ("location.lon", "Expected `float`, got `str`"), ("tags[1]", "Expected `str`, got `int`")]
    assert wrong["detail"] == "endpoint: Expected `str`, got `int`"
    # Every typed body, whatever the endpoint: a lighting program's switch points, a group's members.
    program = assert_problem(await seoul.client.post("/api/v1/lighting/programs", json={
        "name": 1, "switch_points": [{"anchor": "sunset", "dimming_level": "full"}, 5]}), 400)
    assert {e["field"] for e in program["errors"]} == {"name", "switch_points[0].dimming_level", "switch_points[1]"}
    unknown = assert_problem(await seoul.client.post("/api/v1/groups", json={"name": "g", "colour": "red"}), 400)
    assert unknown["errors"] == [{"field": "colour", "message": "Object contains unknown field `colour`"}]
    shape = assert_problem(await seoul.client.post("/api/v1/groups", json=[]), 400)
    assert shape["errors"] == [{"field": "body", "message": "Expected `object`, got `array`"}]


async def test_method_not_allowed_names_the_allowed_methods(seoul):
    for method, path in (("POST", "/healthz"), ("PUT", "/api/v1/devices"), ("PATCH", "/api/v1/apikeys"),
                         ("POST", "/api/v1/audit")):
        response = await seoul.client.request(method, path)
        assert_problem(response, 405)
        assert response.headers.get("allow"), dict(response.headers)


async def test_unauthenticated_is_401_with_a_challenge(seoul):
    base = str(seoul.client.base_url)
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer"},
                    {"Authorization": f"Basic {seoul.key}"}, {"Authorization": "Bearer fleet_nope"},
                    {"Authorization": f"Bearer {seoul.key}x"}, {"Authorization": "Bearer " + "fleet_" * 1000},
                    {"Authorization": b"Bearer fleet_\xff\xfe"}):
        async with httpx.AsyncClient(base_url=base, headers=headers) as client:
            response = await client.get("/api/v1/devices")
        body = assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert seoul.key not in str(body)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"bearer  {seoul.key}"}) as client:
        assert (await client.get("/api/v1/devices")).status_code == 200


async def test_invalid_query_parameters_are_4xx(seoul):
    cases = [
        ("/api/v1/devices", {"limit": "abc"}), ("/api/v1/devices", {"limit": "0"}),
        ("/api/v1/devices", {"limit": "1" * 30}), ("/api/v1/devices", {"cursor": "!!!"}),
        ("/api/v1/devices", {"cursor": "ZDoxMjM0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OTA"}),  # d:<huge>
        ("/api/v1/devices", {"cursor": "eDox"}), ("/api/v1/devices", {"kind": "toaster"}),
        ("/api/v1/devices", {"status": "sleeping"}), ("/api/v1/devices", {"bbox": "a,b,c,d"}),
        ("/api/v1/devices", {"bbox": "10,10,0,0"}), ("/api/v1/devices", {"bbox": "nan,0,1,1"}),
        ("/api/v1/devices", {"near": "1"}), ("/api/v1/devices", {"near": "inf,0"}),
        ("/api/v1/devices", {"near": "0,0", "radius_m": "-5"}), ("/api/v1/devices", {"near": "0,0", "radius_m": "1e400"}),
        ("/api/v1/devices", {"group_id": "nope"}), ("/api/v1/devices", {"district": "x" * 301}),
        ("/api/v1/devices/export", {"format": "pdf"}), ("/api/v1/groups", {"limit": "-1"}),
        ("/api/v1/groups", {"cursor": "%%%"}),
        ("/api/v1/audit", {"since": "soon"}), ("/api/v1/audit", {"api_key_id": "1"}),
    ]
    for path, params in cases:
        response = await seoul.client.get(path, params=params)
        assert response.status_code in (400, 422), (path, params, response.text)
        body = assert_problem(response, response.status_code)
        assert body.get("errors"), (path, params, body)


JUNK_BODIES = [
    b"", b"{", b"}", b"[]", b"null", b"0", b'"text"', b"\x00\xff\xfe", "é".encode("latin-1"),
    b'{"a": NaN}', b'{"location": {"lat": 1e999, "lon": -1e999}}', b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000, b'{"kind": "streetlight", "endpoint": "\\ud800"}',
    b'{"role": "admin", "name": "\\u0000"}', b'{"name": "\\u0000", "description": "\\u0000"}', b'{"device_ids": ["x"]}', b'{"device_ids": []}',
    b'{"name": ' + b'"x"' * 3 + b"}", b'{"tags": "not-a-list"}', b'{"filter": {"near": {"lat": 1}}}',
    b"kind,endpoint\n\xff", b'{"type": "FeatureCollection", "features": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
]
CONTENT_TYPES = ["application/json", "text/csv", "application/geo+json", "text/plain"]


async def routes(seoul) -> list[tuple[str, str]]:
    device = (await seoul.client.post("/api/v1/devices", json=LIGHT)).json()["id"]
    group = (await seoul.client.post("/api/v1/groups", json={"name": "g"})).json()["id"]
    key = str(seoul.principal.api_key_id)
    return [
        ("POST", "/api/v1/devices"), ("PATCH", f"/api/v1/devices/{device}"),
        ("POST", "/api/v1/devices/import"), ("POST", "/api/v1/apikeys"),
        ("POST", "/api/v1/groups"), ("PATCH", f"/api/v1/groups/{group}"),
        ("POST", f"/api/v1/groups/{group}/members"), ("DELETE", f"/api/v1/groups/{group}/members"),
        ("GET", "/api/v1/devices"), ("GET", "/api/v1/audit"), ("DELETE", f"/api/v1/apikeys/{uuid.uuid4()}"),
        ("GET", f"/api/v1/devices/{device}"), ("GET", "/api/v1/tenant"), ("GET", "/healthz"),
        ("PUT", f"/api/v1/apikeys/{key}"),
    ]


async def test_junk_to_every_endpoint_is_never_a_500(seoul):
    failures = []
    for method, path in await routes(seoul):
        for body in JUNK_BODIES:
            # Only the import reads the content type; every other body is JSON whatever it says.
            for content_type in CONTENT_TYPES if path.endswith("/import") else CONTENT_TYPES[:1]:
                response = await seoul.client.request(method, path, content=body,
                                                      headers={"content-type": content_type})
                ok = response.status_code < 500 and (
                    response.status_code < 400 or response.headers["content-type"].startswith(PROBLEM))
                if not ok:
                    failures.append((method, path, body[:40], content_type, response.status_code, response.text[:200]))
    assert not failures, "\n".join(map(str, failures))
    # The device, group and key are still there and the server still answers.
    assert (await seoul.client.get("/api/v1/devices")).status_code == 200


async def test_junk_headers_are_never_a_500(seoul):
    junk = [{"X-Request-ID": "x" * 10_000}, {"X-Request-ID": b"\xff\xfe"}, {"X-Request-ID": ""},
            {"Accept": "application/xml"},
            {"Content-Type": "application/json; charset=latin-1"}, {"Host": "evil.example"}]
    for headers in junk:
        response = await seoul.client.get("/api/v1/devices", headers=headers)
        assert response.status_code < 500, (headers, response.text)
        assert response.headers["x-request-id"].isascii() and 0 < len(response.headers["x-request-id"]) <= 64


async def test_no_free_connection_in_time_is_503_with_retry_after(database_dsn, monkeypatch):
    """REST requests wait a bounded time for the REST pool, then are told to come back; they
    never take the device side's connections."""
    monkeypatch.setattr(database, "ACQUIRE_TIMEOUT_S", 0.2)
    # One REST connection; the system pool keeps its own (the revocation listener holds one).
    db = await Database.connect(database_dsn, min_size=1, max_size=1, system_max_size=4)
    try:
        city = await make_city(db, "seoul")
        async with serve_api(db) as url, httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {city.key}"}) as client:
            assert (await client.get("/api/v1/devices")).status_code == 200  # the key is cached now
            held = await db.tenant_pool.acquire()
            try:
                body = assert_problem(await client.get("/api/v1/devices"), 503)
                assert "busy" in body["detail"]
                busy = await client.get("/api/v1/devices")
                assert busy.headers["retry-after"] == "5"
                async with db.system_tx() as conn:  # the device side's pool is untouched
                    assert await conn.fetchval("select 1") == 1
            finally:
                await db.tenant_pool.release(held)
            assert (await client.get("/api/v1/devices")).status_code == 200
    finally:
        await db.close()
