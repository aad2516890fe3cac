"""Open311 GeoReport v2 over real HTTP, checked against the specification's own example documents
(tests/fixtures/open311): same keys, types, element names and nesting; the spec's example POST."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode
from xml.etree import ElementTree

import httpx
import pytest

from fleet.settings import HttpSettings, RateLimitSettings
from tests.conftest import TEST_MAX_BODY_BYTES, serve_api

FIXTURES = Path(__file__).parent.parent / "fixtures" / "open311"
V2 = "/open311/v2"
# Identifiers the specification prints as numbers in one place and strings in another (its XML
# has no types); ours are strings.
IDENTIFIERS = {"service_code", "service_request_id", "address_id", "zipcode", "key"}
CONTACT = {"email": "jane@example.org", "first_name": "Jane", "last_name": "Citizen", "phone": "010-5555-0101",
           "device_id": "phone-7f3a", "account_id": "acct-991"}
LAMP = (37.5665, 126.9780)


def fixture_json(name: str):
    return json.loads((FIXTURES / name).read_text())


def fixture_xml(name: str) -> ElementTree.Element:
    return ElementTree.fromstring((FIXTURES / name).read_bytes())


def same_shape(ours, theirs, where: str = "$") -> None:
    """Same keys at every level; the same JSON type wherever both sides hold a value (the
    specification's nulls are "may not be returned")."""
    if isinstance(theirs, list):
        # Only a document's own list must hold something; an attribute of free text has no values.
        assert isinstance(ours, list) and (ours or where != "$"), where
        for i, item in enumerate(ours):
            same_shape(item, theirs[0], f"{where}[{i}]")
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        assert set(ours) == set(theirs), (where, set(ours) ^ set(theirs))
        for key in theirs:
            if ours[key] is None or theirs[key] is None:
                continue
            if key in IDENTIFIERS:
                assert isinstance(ours[key], str | int), (where, key)
            else:
                same_shape(ours[key], theirs[key], f"{where}.{key}")
    else:
        number = (int, float)
        expected = number if isinstance(theirs, number) and not isinstance(theirs, bool) else type(theirs)
        assert isinstance(ours, expected) and not (expected is number and isinstance(ours, bool)), \
            (where, ours, theirs)


def element_paths(root: ElementTree.Element) -> dict[str, set[str]]:
    """Each element path and the child element names found under it anywhere in the document."""
    children: dict[str, set[str]] = defaultdict(set)

    def walk(element: ElementTree.Element, path: str) -> None:
        for child in element:
            children[path].add(child.tag)
            walk(child, f"{path}/{child.tag}")
    walk(root, root.tag)
    return dict(children)


def same_xml(body: bytes, fixture: str) -> ElementTree.Element:
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>'), body[:60]
    ours = ElementTree.fromstring(body)
    assert element_paths(ours) == element_paths(fixture_xml(fixture))
    return ours


@pytest.fixture
async def open311(api_url):
    async with httpx.AsyncClient(base_url=api_url) as client:
        yield client


async def reporter_key(city) -> str:
    response = await city.client.post("/api/v1/apikeys", json={"role": "reporter", "name": "FixMyStreet"})
    assert response.status_code == 201, response.text
    return response.json()["key"]


async def add_device(city, n: int, lat: float, lon: float, kind: str = "streetlight") -> str:
    body = {"kind": kind, "endpoint": f"{city.slug}-{kind}-{n}", "location": {"lat": lat, "lon": lon}}
    response = await city.client.post("/api/v1/devices", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def offset(metres_north: float) -> tuple[float, float]:
    return LAMP[0] + metres_north / 111_195, LAMP[1]


async def file(client, key: str, slug: str, fmt: str = "json", **fields) -> httpx.Response:
    form = {"api_key": key, "jurisdiction_id": slug, "service_code": "streetlight_out",
            "lat": LAMP[0], "long": LAMP[1], "description": "Dark since Monday", **fields}
    return await client.post(f"{V2}/requests.{fmt}", content=urlencode(form),
                             headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})


async def test_the_service_list_has_the_specifications_shape(open311, seoul):
    response = await open311.get(f"{V2}/services.json", params={"jurisdiction_id": "seoul"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    services = response.json()
    same_shape(services, fixture_json("services.json"))
    assert {s["service_code"] for s in services} >= {
        "streetlight_out", "streetlight_day_burning", "bin_overflowing", "bin_damaged", "wifi_not_working"}
    xml = await open311.get(f"{V2}/services.xml", params={"jurisdiction_id": "seoul"})
    assert xml.headers["content-type"] == "text/xml; charset=utf-8"
    root = same_xml(xml.content, "services.xml")
    assert [e.findtext("service_code") for e in root] == [s["service_code"] for s in services]
    assert root.find("service/metadata").text == "true"


async def test_a_service_definition_has_the_specifications_shape(open311, seoul):
    response = await open311.get(f"{V2}/services/bin_damaged.json", params={"jurisdiction_id": "seoul"})
    assert response.status_code == 200
    definition = response.json()
    same_shape(definition, fixture_json("service_definition.json"))
    damage = next(a for a in definition["attributes"] if a["code"] == "damage")
    assert damage["datatype"] == "singlevaluelist" and damage["required"] is True
    assert {"key": "knocked_over", "name": "Knocked over"} in damage["values"]
    xml = await open311.get(f"{V2}/services/bin_damaged.xml", params={"jurisdiction_id": "seoul"})
    same_xml(xml.content, "service_definition.xml")
    missing = await open311.get(f"{V2}/services/pothole.json", params={"jurisdiction_id": "seoul"})
    assert missing.status_code == 404
    same_shape(missing.json(), fixture_json("errors.json"))
    assert (await open311.get(f"{V2}/services/bin_damaged.html", params={"jurisdiction_id": "seoul"})).status_code == 404


async def test_the_specifications_example_request_is_filed(open311, seoul):
    key = await reporter_key(seoul)
    # The example body as printed, with our city, key and a service of ours; its attributes are
    # not ours and are ignored, its contact fields are stored and never shown.
    form = dict(parse_qsl((FIXTURES / "post_request.txt").read_text().strip()))
    form |= {"api_key": key, "jurisdiction_id": "seoul", "service_code": "bin_overflowing"}
    for fmt in ("json", "xml"):
        response = await open311.post(f"{V2}/requests.{fmt}", content=urlencode(form),
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 201, response.text
        if fmt == "json":
            created = response.json()
            same_shape(created, fixture_json("post_response.json"))
            assert created[0]["account_id"] is None  # never echoed, though the form sent 123456
        else:
            root = same_xml(response.content, "post_response.xml")
            assert root.findtext("request/account_id") in (None, "")
    listed = await open311.get(f"{V2}/requests.json", params={"jurisdiction_id": "seoul"})
    requests = listed.json()
    same_shape(requests, fixture_json("requests.json"))
    assert len(requests) == 2
    assert requests[0]["address"] == "1234 5th street" and requests[0]["lat"] == 37.76524078
    assert requests[0]["media_url"] == "http://farm3.static.flickr.com/2002/2212426634_5ed477a060.jpg"
    assert requests[0]["status"] == "open"
    assert requests[0]["status_notes"] == "Received; the control room will look into it."
    xml = await open311.get(f"{V2}/requests.xml", params={"jurisdiction_id": "seoul"})
    same_xml(xml.content, "requests.xml")
    for text in (listed.text, xml.text):
        assert not [v for v in ("smit333", "john", "smith", "111111111", "tt222111", "123456") if v in text]


async def test_a_report_joins_the_nearest_devices_alarm_and_work_order(db, open311, seoul):
    key = await reporter_key(seoul)
    near = await add_device(seoul, 1, *offset(20))
    await add_device(seoul, 2, *offset(35))   # farther
    await add_device(seoul, 3, *offset(5), kind="waste_bin")  # nearer, but not a streetlight
    first = (await file(open311, key, "seoul", **CONTACT)).json()[0]
    second = (await file(open311, key, "seoul", service_code="streetlight_day_burning")).json()[0]
    assert first["service_notice"] == "A crew will check the lamp and repair it."
    async with db.system_tx() as conn:
        rows = await conn.fetch("select service_request_id, device_id, alarm_id, work_order_id from service_requests "
                                "where tenant_id = $1 order by seq", seoul.tenant_id)
        assert [r["service_request_id"] for r in rows] == [first["service_request_id"], second["service_request_id"]]
        assert {str(r["device_id"]) for r in rows} == {near}
        assert len({r["alarm_id"] for r in rows}) == 1 and len({r["work_order_id"] for r in rows}) == 1
        alarm = await conn.fetchrow("select type, count, source from alarms where id = $1", rows[0]["alarm_id"])
        assert (alarm["type"], alarm["count"], alarm["source"]) == ("citizen_report", 2, "citizen")
        order = await conn.fetchrow("select type, source, due_by, notes from work_orders where id = $1",
                                    rows[0]["work_order_id"])
        assert order["type"] == "repair_lamp" and order["source"] == "citizen"
        assert first["service_request_id"] in order["notes"] and second["service_request_id"] in order["notes"]
        assert "jane" not in order["notes"].lower()

    one = await open311.get(f"{V2}/requests/{first['service_request_id']}.json", params={"jurisdiction_id": "seoul"})
    request = one.json()[0]
    assert (request["status"], request["status_notes"]) == ("open", "A work order has been created.")
    assert datetime.fromisoformat(request["expected_datetime"]) == order["due_by"].replace(microsecond=0)
    assert request["requested_datetime"].endswith("+09:00")  # the city's time, with its offset
    assert not [v for v in CONTACT.values() if v in one.text]

    # The citizen follows the crew: the work order's progress is the request's.
    async with db.system_tx() as conn:
        await conn.execute("update work_orders set status = 'in_progress', updated_at = now() where id = $1",
                           rows[0]["work_order_id"])
    request = (await open311.get(f"{V2}/requests/{first['service_request_id']}.json",
                                 params={"jurisdiction_id": "seoul"})).json()[0]
    assert (request["status"], request["status_notes"]) == ("open", "A crew is working on it.")
    async with db.system_tx() as conn:
        await conn.execute("update work_orders set status = 'done', updated_at = now() + interval '1 minute' "
                           "where id = $1", rows[0]["work_order_id"])
    closed = await open311.get(f"{V2}/requests.json", params={"jurisdiction_id": "seoul", "status": "closed"})
    assert {r["service_request_id"] for r in closed.json()} == {first["service_request_id"],
                                                               second["service_request_id"]}
    assert closed.json()[0]["status_notes"] == "Repaired."
    assert closed.json()[0]["updated_datetime"] > closed.json()[0]["requested_datetime"]
    assert (await open311.get(f"{V2}/requests.json", params={"jurisdiction_id": "seoul", "status": "open"})).json() == []


async def test_citizens_reporting_one_lamp_at_once_make_one_work_order(db, open311, seoul):
    key = await reporter_key(seoul)
    lamp = await add_device(seoul, 1, *offset(10))
    responses = await asyncio.gather(*(file(open311, key, "seoul", description=f"report {n}") for n in range(8)))
    assert [r.status_code for r in responses] == [201] * 8
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(distinct work_order_id) from service_requests") == 1
        assert await conn.fetchval("select count(*) from work_orders") == 1
        assert await conn.fetchval("select count from alarms") == 8
        assert await conn.fetchval("select device_id::text from alarms") == lamp


async def test_a_report_far_from_any_device_waits_for_the_control_room(db, open311, seoul):
    key = await reporter_key(seoul)
    await add_device(seoul, 1, *offset(80))  # beyond the default 50 m
    filed = (await file(open311, key, "seoul")).json()[0]
    by_address = await file(open311, key, "seoul", lat="", long="", address_string="Sejong-daero 110")
    assert by_address.status_code == 201, by_address.text
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from service_requests where device_id is null") == 2
        assert await conn.fetchval("select count(*) from work_orders") == 0
        # A city that draws its circle wider finds the lamp.
        await conn.execute("insert into open311_settings (tenant_id, match_radius_m) values ($1, 100)",
                           seoul.tenant_id)
    await file(open311, key, "seoul")
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from work_orders") == 1
    request = (await open311.get(f"{V2}/requests/{filed['service_request_id']}.xml",
                                 params={"jurisdiction_id": "seoul"}))
    root = same_xml(request.content, "requests.xml")
    assert root.findtext("request/status") == "open"
    assert root.findtext("request/expected_datetime") in (None, "")


async def test_the_audit_log_names_the_reporting_app(db, open311, seoul):
    key = await reporter_key(seoul)
    filed = (await file(open311, key, "seoul", **CONTACT)).json()[0]
    async with db.system_tx() as conn:
        entry = await conn.fetchrow("select actor, action, entity_id, after from audit_log "
                                    "where action = 'service_request.create'")
    assert entry["actor"] == f"reporter:{key.split('_')[1]}"
    assert entry["entity_id"] == filed["service_request_id"]
    assert not [v for v in CONTACT.values() if v in json.dumps(entry["after"])]


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_errors_come_in_the_specifications_format(open311, seoul, busan, fmt):
    key = await reporter_key(seoul)
    viewer = (await seoul.client.post("/api/v1/apikeys", json={"role": "viewer"})).json()["key"]

    async def error(response: httpx.Response, status: int) -> str:
        assert response.status_code == status, response.text
        if fmt == "json":
            body = response.json()
            same_shape(body, fixture_json("errors.json"))
            assert body[0]["code"] == status
            return " ".join(e["description"] for e in body)
        root = same_xml(response.content, "errors.xml")
        assert root.findtext("error/code") == str(status)
        return " ".join(e.findtext("description") for e in root)

    assert "api_key" in await error(await file(open311, "", "seoul", fmt), 403)
    assert "api_key" in await error(await file(open311, "fleet_00000000_wrong", "seoul", fmt), 403)
    assert "seoul" not in await error(await file(open311, key, "busan", fmt), 403)
    assert "may not file" in await error(await file(open311, viewer, "seoul", fmt), 403)
    assert "jurisdiction_id" in await error(await file(open311, key, "", fmt), 400)
    assert "jurisdiction_id" in await error(await file(open311, key, "atlantis", fmt), 404)
    assert "service_code" in await error(await file(open311, key, "seoul", fmt, service_code="pothole"), 404)
    assert "service_code" in await error(await file(open311, key, "seoul", fmt, service_code=""), 400)
    assert "location" in await error(await file(open311, key, "seoul", fmt, lat="", long=""), 400)
    assert "long" in await error(await file(open311, key, "seoul", fmt, long=""), 400)
    assert "lat" in await error(await file(open311, key, "seoul", fmt, lat="91"), 400)
    assert "media_url" in await error(await file(open311, key, "seoul", fmt, media_url="javascript:x"), 400)
    assert "damage" in await error(await file(open311, key, "seoul", fmt, service_code="bin_damaged"), 400)
    assert "damage" in await error(await file(open311, key, "seoul", fmt, service_code="bin_damaged",
                                              **{"attribute[damage]": "exploded"}), 400)
    listed = f"{V2}/requests.{fmt}"
    assert "jurisdiction_id" in await error(await open311.get(listed), 400)
    assert "atlantis" in await error(await open311.get(listed, params={"jurisdiction_id": "atlantis"}), 404)
    old = (datetime.now(UTC) - timedelta(days=200)).isoformat()
    assert "90 days" in await error(await open311.get(listed, params={
        "jurisdiction_id": "seoul", "start_date": old, "end_date": datetime.now(UTC).isoformat()}), 400)
    assert "offset" in await error(await open311.get(listed, params={"jurisdiction_id": "seoul",
                                                                    "start_date": "2026-01-01T00:00:00"}), 400)
    assert "status" in await error(await open311.get(listed, params={"jurisdiction_id": "seoul",
                                                                    "status": "pending"}), 400)
    assert await error(await open311.get(f"{V2}/requests/nosuchrequest.{fmt}",
                                         params={"jurisdiction_id": "seoul"}), 404)


async def test_filters_and_the_wall_between_cities(open311, seoul, busan):
    key = await reporter_key(seoul)
    lamp = (await file(open311, key, "seoul")).json()[0]["service_request_id"]
    wifi = (await file(open311, key, "seoul", service_code="wifi_not_working",
                       **{"attribute[symptom]": "slow"})).json()[0]["service_request_id"]
    params = {"jurisdiction_id": "seoul"}

    async def ids(**extra) -> list[str]:
        response = await open311.get(f"{V2}/requests.json", params=params | extra)
        assert response.status_code == 200, response.text
        return [r["service_request_id"] for r in response.json()]

    assert await ids() == [wifi, lamp]  # newest first
    assert await ids(service_code="wifi_not_working") == [wifi]
    assert await ids(service_code="wifi_not_working,streetlight_out") == [wifi, lamp]
    assert await ids(service_request_id=f"{lamp},nosuch") == [lamp]
    assert await ids(start_date=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    now = datetime.now(UTC)
    assert await ids(start_date=(now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
                     end_date=(now + timedelta(days=1)).isoformat()) == [wifi, lamp]
    # Busan's jurisdiction knows nothing of Seoul's requests.
    assert (await open311.get(f"{V2}/requests/{lamp}.json", params={"jurisdiction_id": "busan"})).status_code == 404
    assert (await open311.get(f"{V2}/requests.json", params={"jurisdiction_id": "busan"})).json() == []


async def test_a_city_may_keep_its_requests_private(db, open311, seoul, busan):
    key = await reporter_key(seoul)
    filed = (await file(open311, key, "seoul")).json()[0]["service_request_id"]
    async with db.system_tx() as conn:
        await conn.execute("insert into open311_settings (tenant_id, public_requests) values ($1, false)",
                           seoul.tenant_id)
    one = f"{V2}/requests/{filed}.json"
    assert (await open311.get(one, params={"jurisdiction_id": "seoul"})).status_code == 403
    other_city = await reporter_key(busan)
    assert (await open311.get(one, params={"jurisdiction_id": "seoul", "api_key": other_city})).status_code == 403
    response = await open311.get(one, params={"jurisdiction_id": "seoul", "api_key": key})
    assert response.status_code == 200 and response.json()[0]["service_request_id"] == filed
    # The list of services stays public.
    assert (await open311.get(f"{V2}/services.json", params={"jurisdiction_id": "seoul"})).status_code == 200


async def test_rate_limits_answer_429_in_the_specifications_format(db, seoul):
    http = HttpSettings(max_body_bytes=TEST_MAX_BODY_BYTES,
                        limits=RateLimitSettings(address_per_s=0.001, address_burst=3))
    async with serve_api(db, http) as url, httpx.AsyncClient(base_url=url) as client:
        statuses = [(await client.get(f"{V2}/services.json", params={"jurisdiction_id": "seoul"})).status_code
                    for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await client.get(f"{V2}/services.xml", params={"jurisdiction_id": "seoul"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        same_xml(limited.content, "errors.xml")


async def test_the_openapi_document_describes_open311_in_its_own_terms(open311):
    document = (await open311.get("/schema/openapi.json")).json()
    operations = [(path, method, op) for path, item in document["paths"].items() if path.startswith(V2)
                  for method, op in item.items() if method in ("get", "post")]
    assert len(operations) == 8
    for path, method, op in operations:
        assert op["security"] == [], path  # no bearer key: POST carries api_key in its form
        for status, response in op["responses"].items():
            assert set(response["content"]) == {"application/json", "text/xml"}, (path, status)
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"]["items"] == {
                    "$ref": "#/components/schemas/Open311Error"}, (path, status)
    form = document["paths"][f"{V2}/requests.json"]["post"]["requestBody"]["content"]
    assert set(form["application/x-www-form-urlencoded"]["schema"]["required"]) == {
        "api_key", "jurisdiction_id", "service_code"}
