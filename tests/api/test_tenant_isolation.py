"""The wall between cities, walked endpoint by endpoint from the OpenAPI document.

City A's admin key is pointed at every route with city B's ids in the path (and in bodies where
a body names ids). Nothing of B may come back, nothing of B may change. New routes are picked
up automatically; a route whose path parameter this test cannot fill fails the test, so the
wall is extended with the API.
"""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import UTC, datetime
from uuid import UUID

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.service import AlarmService
from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from fleet.events.models import DEVICE_STATUS_CHANGED
from fleet.events.service import publish
from tests.fleet.collection.route_fixtures import seed_route

DEVICE = {"kind": "streetlight", "location": {"lat": 37.57, "lon": 126.98}, "district": "Jung-gu",
          "nominal_wattage": 90}

# Sample bodies that would succeed on one's own ids, so the only reason to refuse is the wall.
BODIES = {
    ("PATCH", "/api/v1/devices/{device_id}"): {"district": "Mapo-gu"},
    ("PATCH", "/api/v1/groups/{group_id}"): {"name": "renamed"},
    ("POST", "/api/v1/groups/{group_id}/members"): {"device_ids": ["{device_id}"]},
    ("DELETE", "/api/v1/groups/{group_id}/members"): {"device_ids": ["{device_id}"]},
    ("POST", "/api/v1/devices/{device_id}/observations"): {"path": "/3416/0/1"},
    ("PUT", "/api/v1/lighting/programs/{program_id}"): {"name": "renamed", "switch_points": [
        {"anchor": "sunset", "dimming_level": 100}, {"anchor": "sunrise", "dimming_level": 0}]},
    ("PUT", "/api/v1/lighting/calendars/{calendar_id}"): {
        "name": "renamed", "default_program_id": "00000000-0000-4000-8000-000000000000"},
    ("PATCH", "/api/v1/lighting/assignments/{assignment_id}"): {
        "calendar_id": "00000000-0000-4000-8000-000000000000"},
    ("POST", "/api/v1/alarms/{alarm_id}/acknowledge"): {"note": "seen"},
    ("POST", "/api/v1/alarms/{alarm_id}/shelve"): {"minutes": 60},
    ("POST", "/api/v1/alarms/{alarm_id}/clear"): {"note": "fixed"},
    ("PUT", "/api/v1/groups/{group_id}/alarm-settings"): {"clear_after_minutes": 1},
    ("PATCH", "/api/v1/workorders/{work_order_id}"): {"notes": "mine now"},
    ("PATCH", "/api/v1/crews/{crew_id}"): {"name": "ours now", "home_base": {"lat": 37.57, "lon": 126.98}},
    ("POST", "/api/v1/routes/{route_id}/assign"): {"crew_id": None},
    ("POST", "/api/v1/routes/{route_id}/stops/{stop_id}"): {"status": "done"},
    # No id in the path: an admin key has no crew, so this is refused as such (and touches no crew).
    ("PUT", "/api/v1/crews/me/position"): {"lat": 37.57, "lon": 126.98},
    ("PUT", "/api/v1/devices/{device_id}/security"): {"mode": "psk", "identity": "taken-over", "key_hex": "00" * 16},
}
# Open311 names the city in `jurisdiction_id`: the caller names its own, and B's ids must stay B's.
OPEN311 = "/open311/"
FIRMWARE_KEYS = "/api/v1/firmware/keys/"
COLLECTION_WINDOWS = "/api/v1/collection/time-windows/"
# The service catalogue is the same in every city (fleet.reports.models.SERVICES): nothing of B's.
SHARED_NAMES = {"service_code"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
QUERIES = {
    ("GET", "/api/v1/devices/{device_id}/series"): {"path": "/3303/0/5700"},
    ("DELETE", "/api/v1/devices/{device_id}/observations"): {"path": "/3416/0/1"},
    ("GET", "/api/v1/map"): {"bbox": "-180,-90,180,90", "zoom": "18"},
}


SENTINEL = "seoul-sentinel"


async def read_stream(client, url: str, until: str) -> str:
    """An event stream, from the start of the log, read until `until` shows up."""
    text = ""
    async with client.stream("GET", url, headers={"Last-Event-ID": "0-0"}) as response:
        assert response.status_code == 200
        async with asyncio.timeout(15):
            async for chunk in response.aiter_text():
                text += chunk
                if until in text:
                    return text
    raise AssertionError(f"the stream ended before {until!r}")


async def seed(city, n: int) -> dict[str, str]:
    client = city.client
    device = (await client.post("/api/v1/devices", json={**DEVICE, "endpoint": f"{city.slug}-{n}",
                                                         "serial": f"{city.slug}-S{n}"})).json()
    group = (await client.post("/api/v1/groups", json={"name": f"{city.slug} group",
                                                        "device_ids": [device["id"]]})).json()
    psk_identity = f"{city.slug}-psk-{n}"
    assert (await client.put(f"/api/v1/devices/{device['id']}/security", json={
        "mode": "psk", "identity": psk_identity, "key_hex": "0f" * 16})).status_code == 200
    key = (await client.post("/api/v1/apikeys", json={"role": "viewer", "name": "partner"})).json()
    program = (await client.post("/api/v1/lighting/programs", json={"name": "dusk", "switch_points": [
        {"anchor": "sunset", "dimming_level": 100}, {"anchor": "sunrise", "dimming_level": 0}]})).json()
    calendar = (await client.post("/api/v1/lighting/calendars", json={
        "name": "city", "default_program_id": program["id"]})).json()
    assignment = (await client.post("/api/v1/lighting/assignments", json={
        "calendar_id": calendar["id"], "group_id": group["id"]})).json()
    override = (await client.post("/api/v1/lighting/overrides", json={
        "scope": {"group_id": group["id"]}, "dimming_level": 100, "duration_s": 3600})).json()
    reporter = (await client.post("/api/v1/apikeys", json={"role": "reporter"})).json()["key"]
    report = (await client.post("/open311/v2/requests.json", data={
        "api_key": reporter, "jurisdiction_id": city.slug, "service_code": "streetlight_out",
        "lat": 37.57, "long": 126.98})).json()[0]
    crew = (await client.post("/api/v1/crews", json={"name": f"{city.slug} crew"})).json()
    work_order = (await client.post("/api/v1/workorders", json={
        "device_ids": [device["id"]], "type": "repair_lamp", "crew_id": crew["id"]})).json()
    attachment = (await client.post(f"/api/v1/workorders/{work_order['id']}/attachments",
                                    content=PNG, headers={"Content-Type": "image/png"})).json()
    release_key = Ed25519PrivateKey.generate()
    firmware_key = (await client.post("/api/v1/firmware/keys", json={
        "name": f"{city.slug} release", "public_key": release_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()})).json()
    firmware = f"{city.slug} firmware".encode()
    image = (await client.post("/api/v1/firmware/images", files={"file": ("fw.bin", firmware)}, data={
        "version": "1.0", "signature": base64.b64encode(release_key.sign(firmware)).decode()})).json()
    campaign = (await client.post("/api/v1/firmware/campaigns", json={
        "image_id": image["id"], "target": {"device_ids": [device["id"]]}})).json()
    window = (await client.post("/api/v1/firmware/windows", json={
        "start": "01:00", "end": "05:00", "group_id": group["id"]})).json()
    depot = (await client.post("/api/v1/collection/depots", json={
        "name": f"{city.slug} depot", "location": {"lat": 37.5, "lon": 127.0}})).json()
    site = (await client.post("/api/v1/collection/disposal-sites", json={
        "name": f"{city.slug} site", "location": {"lat": 37.5, "lon": 127.0}})).json()
    vehicle = (await client.post("/api/v1/collection/vehicles", json={
        "name": f"{city.slug} truck", "waste_kind": "inorganic", "capacity_litres": 8000, "depot_id": depot["id"],
        "shift_start": "06:00", "shift_end": "14:00"})).json()
    time_window = (await client.post("/api/v1/collection/time-windows", json={
        "starts": "08:00", "ends": "09:00", "district": "Jung-gu"})).json()
    plan = (await client.post("/api/v1/collection/plans", json={"date": "2026-12-08"})).json()
    return {"depot_id": depot["id"], "site_id": site["id"], "vehicle_id": vehicle["id"],
            "window_id_collection": time_window["id"], "plan_id": plan["id"],
            "crew_id": crew["id"], "work_order_id": work_order["id"], "attachment_id": attachment["id"],
            "firmware_key_id": firmware_key["id"], "image_id": image["id"],
            "campaign_id": campaign["id"], "window_id": window["id"],
            "device_id": device["id"], "group_id": group["id"], "key_id": key["api_key"]["id"],
            "endpoint": device["endpoint"], "psk_identity": psk_identity,
            "program_id": program["id"], "calendar_id": calendar["id"],
            "assignment_id": assignment["id"], "override_id": override["id"],
            "service_request_id": report["service_request_id"]}


async def test_every_endpoint_refuses_a_foreign_city(db, seoul, busan):
    mine = await seed(seoul, 1)
    theirs = await seed(busan, 2)
    await seed_route(db, seoul.tenant_id, bins=1, prefix="seoul route")
    route = await seed_route(db, busan.tenant_id, bins=1, prefix="busan route")
    theirs.update(route_id=str(route.route_id), stop_id=str(route.stop_ids[0]), route_plan_id=str(route.plan_id),
                  bin_id=str(route.bin_ids[0]))
    await busan.client.post(f"/api/v1/routes/{route.route_id}/assign", json={"crew_id": theirs["crew_id"]})
    batch = await CommandService(db).submit(busan.principal, CommandRequest(
        Target(device_ids=(UUID(theirs["device_id"]),)), Operation.READ, "/3/0"))
    theirs["command_id"] = str(batch.id)
    await AlarmService(db).apply([Finding(busan.tenant_id, UUID(theirs["device_id"]), AlarmType.LAMP_FAILURE,
                                          True, datetime.now(UTC))])
    theirs["alarm_id"] = (await busan.client.get("/api/v1/alarms")).json()["items"][0]["id"]
    # B's events carry B's ids; A's stream, read from the start of the log, must end up at A's
    # own later event without showing them.
    async with db.system_tx() as conn:
        await publish(conn, busan.tenant_id, DEVICE_STATUS_CHANGED, "device", theirs["device_id"],
                      {"device_id": theirs["device_id"], "status": "online", "previous": "provisioned"})
        await publish(conn, seoul.tenant_id, DEVICE_STATUS_CHANGED, "device", SENTINEL, {})
    secrets_of_b = {theirs["device_id"], theirs["group_id"], theirs["key_id"], theirs["endpoint"],
                    theirs["psk_identity"],
                    theirs["crew_id"], theirs["work_order_id"], theirs["attachment_id"],
                    theirs["command_id"], theirs["program_id"], theirs["calendar_id"],
                    theirs["assignment_id"], theirs["override_id"], theirs["alarm_id"],
                    theirs["service_request_id"], theirs["firmware_key_id"], theirs["image_id"],
                    theirs["campaign_id"], theirs["window_id"], theirs["depot_id"], theirs["site_id"],
                    theirs["vehicle_id"], theirs["window_id_collection"], theirs["plan_id"],
                    theirs["route_id"], theirs["stop_id"], theirs["route_plan_id"], theirs["bin_id"]}
    # Open311's last path segment carries the format.
    in_path = {**theirs, "service_request_id": f"{theirs['service_request_id']}.json",
               "service_code": "streetlight_out.json"}

    schema = (await seoul.client.get("/schema/openapi.json")).json()
    walked = 0
    for path, operations in schema["paths"].items():
        for method in operations:
            method = method.upper()
            if method not in ("GET", "POST", "PATCH", "PUT", "DELETE"):
                continue
            names = re.findall(r"{(\w+)}", path)
            missing = [n for n in names if n not in in_path]
            assert not missing, f"teach this test how to fill {missing} for {method} {path}"
            url = path
            # A release key's id is a firmware key's, not an API key's.
            ids = {**in_path, "key_id": theirs["firmware_key_id"]} if path.startswith(FIRMWARE_KEYS) else in_path
            if path.startswith(COLLECTION_WINDOWS):  # a collection time window, not a firmware window
                ids = {**ids, "window_id": theirs["window_id_collection"]}
            for name in names:
                url = url.replace("{" + name + "}", ids[name])
            body = BODIES.get((method, path))
            if body and body.get("device_ids") == ["{device_id}"]:
                body = {"device_ids": [theirs["device_id"]]}
            params = QUERIES.get((method, path))
            if path.startswith(OPEN311):
                params = {"jurisdiction_id": seoul.slug}
            walked += 1
            if "text/event-stream" in operations[method.lower()]["responses"].get("200", {}).get("content", {}):
                text = await read_stream(seoul.client, url, until=SENTINEL)
                leaked = [s for s in secrets_of_b if s in text]
                assert not leaked, f"{method} {path} leaked {leaked}"
                continue
            response = await seoul.client.request(method, url, json=body, params=params)
            text = response.text
            leaked = [s for s in secrets_of_b if s in text and s not in url]
            assert not leaked, f"{method} {path} leaked {leaked}"
            if set(names) - SHARED_NAMES:
                assert response.status_code == 404, f"{method} {path}: {response.status_code} {text[:300]}"

    assert walked >= 20
    # Bodies that name foreign ids are refused as unknown, never acted upon.
    response = await seoul.client.post(f"/api/v1/groups/{mine['group_id']}/members",
                                       json={"device_ids": [theirs["device_id"]]})
    assert response.status_code == 422
    response = await seoul.client.post("/api/v1/commands", json={
        "target": {"device_ids": [theirs["device_id"]]}, "operation": "read", "path": "/3/0"})
    assert response.status_code == 422
    response = await seoul.client.post("/api/v1/commands", json={
        "target": {"group_id": theirs["group_id"]}, "operation": "read", "path": "/3/0"})
    assert response.status_code == 404
    # A campaign of B's image, or for B's devices or group, or a window for B's group: refused.
    for body in ({"image_id": theirs["image_id"], "target": {"device_ids": [mine["device_id"]]}},
                 {"image_id": mine["image_id"], "target": {"device_ids": [theirs["device_id"]]}}):
        assert (await seoul.client.post("/api/v1/firmware/campaigns", json=body)).status_code == 422
    response = await seoul.client.post("/api/v1/firmware/campaigns", json={
        "image_id": mine["image_id"], "target": {"group_id": theirs["group_id"]}})
    assert response.status_code == 404
    response = await seoul.client.post("/api/v1/firmware/windows", json={
        "start": "01:00", "end": "05:00", "group_id": theirs["group_id"]})
    assert response.status_code == 422
    for url in ("/api/v1/devices", "/api/v1/groups", "/api/v1/apikeys", "/api/v1/audit", "/api/v1/alarms",
                "/api/v1/alarms/counts?status=all",
                "/api/v1/devices/export?format=csv", "/api/v1/devices/export?format=geojson",
                "/api/v1/crews", "/api/v1/workorders", "/api/v1/workorders?near=37.5,127.0",
                "/api/v1/firmware/campaigns", "/api/v1/firmware/windows",
                "/api/v1/firmware/keys", "/api/v1/firmware/images", "/api/v1/collection/depots",
                "/api/v1/collection/disposal-sites", "/api/v1/collection/vehicles",
                "/api/v1/collection/time-windows", "/api/v1/collection/plans", "/api/v1/collection/settings",
                "/api/v1/routes", f"/api/v1/routes?plan={theirs['route_plan_id']}",
                f"/api/v1/routes?crew={theirs['crew_id']}"):
        text = (await seoul.client.get(url)).text
        assert not [s for s in secrets_of_b if s in text], url

    # And B's rows are exactly as B left them.
    device = (await busan.client.get(f"/api/v1/devices/{theirs['device_id']}")).json()
    assert device["status"] == "provisioned" and device["district"] == "Jung-gu"
    group = (await busan.client.get(f"/api/v1/groups/{theirs['group_id']}")).json()
    assert group["name"] == "busan group" and group["member_count"] == 1
    crew = (await busan.client.get(f"/api/v1/crews/{theirs['crew_id']}")).json()
    assert (crew["name"], crew["home_base"], crew["position"]) == ("busan crew", None, None)
    order = (await busan.client.get(f"/api/v1/workorders/{theirs['work_order_id']}")).json()
    assert (order["notes"], order["version"], order["status"]) == ("", 1, "assigned")
    keys = (await busan.client.get("/api/v1/apikeys")).json()
    assert all(k["revoked_at"] is None for k in keys)
    command = (await busan.client.get(f"/api/v1/commands/{theirs['command_id']}")).json()
    assert command["counts"]["cancelled"] == 0
    program = (await busan.client.get(f"/api/v1/lighting/programs/{theirs['program_id']}")).json()
    assert program["name"] == "dusk"
    override = (await busan.client.get(f"/api/v1/lighting/overrides/{theirs['override_id']}")).json()
    assert override["cancelled_at"] is None
    alarm = (await busan.client.get(f"/api/v1/alarms/{theirs['alarm_id']}")).json()
    assert alarm["status"] == "active" and alarm["shelved_until"] is None
    campaign = (await busan.client.get(f"/api/v1/firmware/campaigns/{theirs['campaign_id']}")).json()
    assert (campaign["status"], campaign["version"], campaign["counts"]["pending"]) == ("draft", 1, 1)
    assert [w["id"] for w in (await busan.client.get("/api/v1/firmware/windows")).json()] == [theirs["window_id"]]
    release_keys = (await busan.client.get("/api/v1/firmware/keys")).json()
    assert [(k["id"], k["revoked_at"]) for k in release_keys] == [(theirs["firmware_key_id"], None)]
    image = await busan.client.get(f"/api/v1/firmware/images/{theirs['image_id']}/content")
    assert image.content == b"busan firmware"
    # Busan's own: the set-up's and the seeded route's.
    assert theirs["vehicle_id"] in [v["id"] for v in (await busan.client.get("/api/v1/collection/vehicles")).json()]
    assert theirs["depot_id"] in [d["id"] for d in (await busan.client.get("/api/v1/collection/depots")).json()]
    assert len((await busan.client.get("/api/v1/collection/time-windows")).json()) == 1
    assert (await busan.client.get(f"/api/v1/collection/plans/{theirs['plan_id']}")).json()["status"] == "ready"
    route = (await busan.client.get(f"/api/v1/routes/{theirs['route_id']}")).json()
    assert (route["status"], route["version"], route["crew_id"]) == ("assigned", 2, theirs["crew_id"])
    assert [s["status"] for s in route["stops"]] == ["planned", "planned"]
    assignments = (await busan.client.get("/api/v1/lighting/assignments")).json()
    assert [a["calendar_id"] for a in assignments] == [theirs["calendar_id"]]
