"""Device groups over real HTTP: CRUD, static members, saved filters, pagination, tenant wall, audit."""

from __future__ import annotations

import uuid

import httpx
import pytest

from fleet.access.models import Role

GROUPS = "/api/v1/groups"


def streetlight(n: int, **fields) -> dict:
    return {"kind": "streetlight", "endpoint": f"sl-{n:04d}", "serial": f"SN-{n}",
            "location": {"lat": 37.55 + n * 0.001, "lon": 126.95}, "district": "Jung-gu",
            "nominal_wattage": 90, **fields}


async def add_devices(city, count: int, start: int = 0, **fields) -> list[dict]:
    devices = []
    for n in range(start, start + count):
        response = await city.client.post("/api/v1/devices", json=streetlight(n, **fields))
        assert response.status_code == 201, response.text
        devices.append(response.json())
    return devices


async def create_group(city, **body) -> dict:
    response = await city.client.post(GROUPS, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def member_ids(city, group_id: str, **params) -> list[str]:
    """Every member over all pages, in listing order."""
    ids, cursor = [], None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = await city.client.get(f"{GROUPS}/{group_id}/members", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        ids += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


async def audit_actions(city, group_id: str) -> list[dict]:
    response = await city.client.get("/api/v1/audit", params={"entity_type": "group", "entity_id": group_id})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["items"]))


def fields_of(response: httpx.Response) -> set[str]:
    return {e["field"] for e in response.json().get("errors", [])}


async def test_static_group_lifecycle(seoul):
    devices = await add_devices(seoul, 3)
    ids = [d["id"] for d in devices]
    group = await create_group(seoul, name="  Jung-gu lamps ", description="Night works",
                               device_ids=[ids[0], ids[1], ids[0]])
    assert group["name"] == "Jung-gu lamps" and group["description"] == "Night works"
    assert (group["dynamic"], group["filter"], group["member_count"]) == (False, None, 2)

    fetched = await seoul.client.get(f"{GROUPS}/{group['id']}")
    assert fetched.status_code == 200 and fetched.json() == group
    assert await member_ids(seoul, group["id"]) == ids[:2]

    patched = await seoul.client.patch(f"{GROUPS}/{group['id']}",
                                       json={"name": "Jung-gu night works", "description": ""})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["description"], patched.json()["member_count"]) == (
        "Jung-gu night works", "", 2)
    unchanged = await seoul.client.patch(f"{GROUPS}/{group['id']}", json={})
    assert unchanged.status_code == 200 and unchanged.json() == patched.json()

    deleted = await seoul.client.delete(f"{GROUPS}/{group['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await seoul.client.get(f"{GROUPS}/{group['id']}")).status_code == 404
    assert (await seoul.client.get(f"{GROUPS}/{group['id']}/members")).status_code == 404
    assert (await seoul.client.delete(f"{GROUPS}/{group['id']}")).status_code == 404
    # Groups are configuration: deleting one leaves its devices alone.
    assert (await seoul.client.get(f"/api/v1/devices/{ids[0]}")).json()["status"] == "provisioned"


async def test_dynamic_group_follows_devices(seoul):
    devices = await add_devices(seoul, 6)
    mapo = [d["id"] for d in devices[:3]]
    for device_id in mapo:
        assert (await seoul.client.patch(f"/api/v1/devices/{device_id}",
                                         json={"district": "Mapo-gu"})).status_code == 200
    group = await create_group(seoul, name="Mapo streetlights",
                               filter={"kind": "streetlight", "district": "Mapo-gu"})
    assert group["dynamic"] is True
    assert group["filter"] == {"kind": "streetlight", "district": "Mapo-gu"}
    assert group["member_count"] == 3
    assert await member_ids(seoul, group["id"]) == mapo

    # A device moving into the district joins; one moving out leaves; a decommissioned one leaves.
    joiner, leaver = devices[4]["id"], mapo[0]
    await seoul.client.patch(f"/api/v1/devices/{joiner}", json={"district": "Mapo-gu"})
    await seoul.client.patch(f"/api/v1/devices/{leaver}", json={"district": "Jung-gu"})
    assert await member_ids(seoul, group["id"]) == [mapo[1], mapo[2], joiner]
    await seoul.client.delete(f"/api/v1/devices/{mapo[1]}")
    assert await member_ids(seoul, group["id"]) == [mapo[2], joiner]
    assert (await seoul.client.get(f"{GROUPS}/{group['id']}")).json()["member_count"] == 2

    # The registry's own list resolves the group the same way.
    listed = (await seoul.client.get("/api/v1/devices", params={"group_id": group["id"]})).json()
    assert [d["id"] for d in listed["items"]] == [mapo[2], joiner]

    # Members cannot be managed one by one in a dynamic group.
    for response in (
        await seoul.client.post(f"{GROUPS}/{group['id']}/members", json={"device_ids": [leaver]}),
        await seoul.client.request("DELETE", f"{GROUPS}/{group['id']}/members", json={"device_ids": [joiner]}),
        await seoul.client.delete(f"{GROUPS}/{group['id']}/members/{joiner}"),
    ):
        assert response.status_code == 409, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_saved_filter_with_area_conditions(seoul):
    await add_devices(seoul, 25)
    near = await create_group(seoul, name="Around the plaza",
                              filter={"near": {"lat": 37.55, "lon": 126.95, "radius_m": 250}})
    assert near["filter"] == {"near": {"lat": 37.55, "lon": 126.95, "radius_m": 250.0}}
    assert near["member_count"] == 3
    default_radius = await create_group(seoul, name="Plaza default",
                                        filter={"near": {"lat": 37.55, "lon": 126.95}})
    assert default_radius["filter"]["near"]["radius_m"] == 500.0
    boxed = await create_group(seoul, name="Box", filter={"bbox": [126.94, 37.5595, 126.96, 37.5625]})
    assert boxed["member_count"] == 3
    members = (await seoul.client.get(f"{GROUPS}/{boxed['id']}/members")).json()["items"]
    endpoints = [d["endpoint"] for d in members]
    assert endpoints == ["sl-0010", "sl-0011", "sl-0012"]
    # The member listing carries distances when the saved filter is a circle.
    items = (await seoul.client.get(f"{GROUPS}/{near['id']}/members")).json()["items"]
    assert all(0 <= d["distance_m"] <= 250 for d in items)


async def test_device_filters_on_top_of_members(seoul):
    devices = await add_devices(seoul, 6)
    for device in devices[3:]:
        await seoul.client.patch(f"/api/v1/devices/{device['id']}",
                                 json={"district": "Mapo-gu", "status": "maintenance"})
    static = await create_group(seoul, name="Static", device_ids=[d["id"] for d in devices[1:5]])
    assert await member_ids(seoul, static["id"], district="Mapo-gu") == [devices[3]["id"], devices[4]["id"]]
    assert await member_ids(seoul, static["id"], status="provisioned") == [devices[1]["id"], devices[2]["id"]]
    dynamic = await create_group(seoul, name="Maintenance", filter={"status": "maintenance"})
    assert await member_ids(seoul, dynamic["id"], district="Mapo-gu") == [d["id"] for d in devices[3:]]
    assert await member_ids(seoul, dynamic["id"], district="Jung-gu") == []
    assert await member_ids(seoul, dynamic["id"], bbox="126.94,37.5535,126.96,37.5545") == [devices[4]["id"]]
    bad = await seoul.client.get(f"{GROUPS}/{dynamic['id']}/members", params={"kind": "toaster", "bbox": "1,2"})
    assert bad.status_code == 422 and fields_of(bad) == {"kind", "bbox"}


async def test_member_pagination(seoul):
    devices = await add_devices(seoul, 23)
    wanted = [d["id"] for d in devices if int(d["endpoint"][-4:]) % 2 == 0]
    group = await create_group(seoul, name="Even poles", device_ids=list(reversed(wanted)))
    assert group["member_count"] == 12
    pages, cursor = [], None
    while True:
        params = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = (await seoul.client.get(f"{GROUPS}/{group['id']}/members", params=params)).json()
        pages.append([d["id"] for d in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [5, 5, 2]
    # Same order and cursor as /api/v1/devices: registration order, whatever order they were added in.
    assert sum(pages, []) == wanted
    first = (await seoul.client.get(f"{GROUPS}/{group['id']}/members", params={"limit": 5})).json()
    same = (await seoul.client.get("/api/v1/devices", params={"group_id": group["id"], "limit": 5})).json()
    assert first == same
    bad = await seoul.client.get(f"{GROUPS}/{group['id']}/members", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and fields_of(bad) == {"cursor"}
    assert (await seoul.client.get(f"{GROUPS}/{group['id']}/members", params={"limit": 0})).status_code == 400


async def test_members_add_and_remove(seoul, busan):
    devices = await add_devices(seoul, 5)
    ids = [d["id"] for d in devices]
    group = await create_group(seoul, name="Crew A")
    assert group["member_count"] == 0 and group["dynamic"] is False

    added = await seoul.client.post(f"{GROUPS}/{group['id']}/members", json={"device_ids": ids[:3]})
    assert added.status_code == 200 and added.json()["member_count"] == 3
    again = await seoul.client.post(f"{GROUPS}/{group['id']}/members", json={"device_ids": ids[1:4]})
    assert again.status_code == 200 and again.json()["member_count"] == 4
    # Adding only present members changes nothing at all.
    same = await seoul.client.post(f"{GROUPS}/{group['id']}/members", json={"device_ids": ids[:2]})
    assert same.status_code == 200 and same.json() == again.json()

    busan_device = (await add_devices(busan, 1, start=500))[0]["id"]
    unknown = str(uuid.uuid4())
    await seoul.client.delete(f"/api/v1/devices/{ids[4]}")
    rejected = await seoul.client.post(f"{GROUPS}/{group['id']}/members",
                                       json={"device_ids": [ids[4], unknown, busan_device]})
    assert rejected.status_code == 422
    messages = " ".join(e["message"] for e in rejected.json()["errors"])
    assert unknown in messages and busan_device in messages and ids[4] in messages
    assert fields_of(rejected) == {"device_ids"}
    # The other city's device reads exactly like an unknown one.
    assert f"{busan_device}: no such device in this city" in messages
    assert (await seoul.client.get(f"{GROUPS}/{group['id']}")).json()["member_count"] == 4

    removed = await seoul.client.request("DELETE", f"{GROUPS}/{group['id']}/members",
                                         json={"device_ids": [ids[0], ids[1], unknown]})
    assert removed.status_code == 200 and removed.json()["member_count"] == 2
    one = await seoul.client.delete(f"{GROUPS}/{group['id']}/members/{ids[2]}")
    assert one.status_code == 200 and one.json()["member_count"] == 1
    absent = await seoul.client.delete(f"{GROUPS}/{group['id']}/members/{ids[2]}")
    assert absent.status_code == 200 and absent.json() == one.json()
    assert await member_ids(seoul, group["id"]) == [ids[3]]

    for body in ({"device_ids": []}, {"device_ids": ["nope"]}, {}, {"device_ids": [ids[0]], "x": 1}):
        response = await seoul.client.post(f"{GROUPS}/{group['id']}/members", json=body)
        assert response.status_code == 400, (body, response.text)
    missing = await seoul.client.post(f"{GROUPS}/{uuid.uuid4()}/members", json={"device_ids": [ids[0]]})
    assert missing.status_code == 404


async def test_switching_between_static_and_filter(seoul):
    devices = await add_devices(seoul, 3)
    ids = [d["id"] for d in devices]
    group = await create_group(seoul, name="Switcher", device_ids=ids[:2])
    # Giving a static group a filter drops its members: membership now comes from the filter.
    patched = await seoul.client.patch(f"{GROUPS}/{group['id']}", json={"filter": {"tag": "festival"}})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["dynamic"], patched.json()["member_count"]) == (True, 0)
    await seoul.client.patch(f"/api/v1/devices/{ids[2]}", json={"tags": ["festival"]})
    assert await member_ids(seoul, group["id"]) == [ids[2]]
    refiltered = await seoul.client.patch(f"{GROUPS}/{group['id']}", json={"filter": {"district": "Jung-gu"}})
    assert refiltered.json()["filter"] == {"district": "Jung-gu"} and refiltered.json()["member_count"] == 3
    # `filter: null` makes it static again, and empty.
    static = await seoul.client.patch(f"{GROUPS}/{group['id']}", json={"filter": None})
    assert (static.json()["dynamic"], static.json()["filter"], static.json()["member_count"]) == (False, None, 0)
    actions = [(e["action"], e["before"], e["after"]) for e in await audit_actions(seoul, group["id"])]
    assert actions[2][0] == "group.members.remove" and sorted(actions[2][1]["device_ids"]) == sorted(ids[:2])
    assert [a for a, _, _ in actions] == ["group.create", "group.members.add", "group.members.remove",
                                          "group.update", "group.update", "group.update"]


async def test_audit_entries(seoul):
    ids = [d["id"] for d in await add_devices(seoul, 3)]
    group = await create_group(seoul, name="Audited", device_ids=[ids[0]])
    await seoul.client.post(f"{GROUPS}/{group['id']}/members", json={"device_ids": [ids[0], ids[1], ids[2]]})
    await seoul.client.post(f"{GROUPS}/{group['id']}/members", json={"device_ids": [ids[1]]})  # no-op
    await seoul.client.delete(f"{GROUPS}/{group['id']}/members/{ids[1]}")
    await seoul.client.patch(f"{GROUPS}/{group['id']}", json={"name": "Audited twice"})
    await seoul.client.patch(f"{GROUPS}/{group['id']}", json={"name": "Audited twice"})  # no-op
    await seoul.client.delete(f"{GROUPS}/{group['id']}")
    entries = await audit_actions(seoul, group["id"])
    assert [(e["action"], e["before"], e["after"]) for e in entries[1:4]] == [
        ("group.members.add", None, {"device_ids": [ids[0]]}),
        ("group.members.add", None, {"device_ids": [ids[1], ids[2]]}),
        ("group.members.remove", {"device_ids": [ids[1]]}, None),
    ]
    create, update, remove_all, delete = entries[0], entries[4], entries[5], entries[6]
    assert (create["action"], create["before"], create["after"]["name"]) == ("group.create", None, "Audited")
    assert (update["action"], update["before"]["name"], update["after"]["name"]) == (
        "group.update", "Audited", "Audited twice")
    # Deleting a static group names the members it had, so the group can be rebuilt.
    assert remove_all["action"] == "group.members.remove"
    assert sorted(remove_all["before"]["device_ids"]) == sorted([ids[0], ids[2]])
    assert (delete["action"], delete["before"]["name"], delete["before"]["member_count"], delete["after"]) == (
        "group.delete", "Audited twice", 2, None)
    assert len(entries) == 7
    assert all(e["api_key_id"] == str(seoul.principal.api_key_id) and e["request_id"] for e in entries)


async def test_names_are_unique_per_city(seoul, busan):
    first = await create_group(seoul, name="Night works")
    second = await create_group(seoul, name="Day works")
    duplicate = await seoul.client.post(GROUPS, json={"name": "Night works", "filter": {"kind": "waste_bin"}})
    assert duplicate.status_code == 409 and fields_of(duplicate) == {"name"}
    renamed = await seoul.client.patch(f"{GROUPS}/{second['id']}", json={"name": "Night works"})
    assert renamed.status_code == 409
    assert (await seoul.client.get(f"{GROUPS}/{second['id']}")).json()["name"] == "Day works"
    # Another city may use the same name.
    assert (await busan.client.post(GROUPS, json={"name": "Night works"})).status_code == 201
    assert (await seoul.client.patch(f"{GROUPS}/{first['id']}", json={"name": "Night works"})).status_code == 200


async def test_group_list_is_paged_by_name(seoul, busan):
    names = ["delta", "Alpha", "charlie", "bravo", "echo", "foxtrot", "golf"]
    for name in names:
        await create_group(seoul, name=name)
    await create_group(busan, name="busan only")
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = await seoul.client.get(GROUPS, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 3
        seen += [g["name"] for g in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    all_at_once = [g["name"] for g in (await seoul.client.get(GROUPS)).json()["items"]]
    assert seen == all_at_once and sorted(seen, key=str.lower) == sorted(names, key=str.lower)
    assert len(seen) == 7
    device_cursor = (await seoul.client.get("/api/v1/devices", params={"limit": 1})).json()["next_cursor"]
    for bad in ("zzz", "Zzpnb2xmIl0", device_cursor or "ZDox"):
        response = await seoul.client.get(GROUPS, params={"cursor": bad})
        assert response.status_code == 422 and fields_of(response) == {"cursor"}, bad
    assert (await seoul.client.get(GROUPS, params={"limit": 1001})).status_code == 400


async def test_member_counts_in_list(seoul):
    devices = await add_devices(seoul, 4)
    await seoul.client.patch(f"/api/v1/devices/{devices[0]['id']}", json={"district": "Mapo-gu"})
    await create_group(seoul, name="a static", device_ids=[d["id"] for d in devices[:3]])
    await create_group(seoul, name="b mapo", filter={"district": "Mapo-gu"})
    await create_group(seoul, name="c near", filter={"near": {"lat": 37.55, "lon": 126.95, "radius_m": 150}})
    await create_group(seoul, name="d empty")
    listed = (await seoul.client.get(GROUPS)).json()["items"]
    assert [(g["name"], g["member_count"]) for g in listed] == [
        ("a static", 3), ("b mapo", 1), ("c near", 2), ("d empty", 0)]


async def test_tenant_wall(seoul, busan):
    seoul_device = (await add_devices(seoul, 1))[0]["id"]
    busan_device = (await add_devices(busan, 1, start=100))[0]["id"]
    group = await create_group(seoul, name="Seoul only", device_ids=[seoul_device])
    gid = group["id"]
    for response in (
        await busan.client.get(f"{GROUPS}/{gid}"),
        await busan.client.patch(f"{GROUPS}/{gid}", json={"name": "taken over"}),
        await busan.client.delete(f"{GROUPS}/{gid}"),
        await busan.client.get(f"{GROUPS}/{gid}/members"),
        await busan.client.post(f"{GROUPS}/{gid}/members", json={"device_ids": [busan_device]}),
        await busan.client.delete(f"{GROUPS}/{gid}/members/{seoul_device}"),
        await busan.client.get("/api/v1/devices", params={"group_id": gid}),
    ):
        assert response.status_code == 404, response.text
    assert (await busan.client.get(GROUPS)).json()["items"] == []
    rejected = await seoul.client.post(GROUPS, json={"name": "Mixed", "device_ids": [seoul_device, busan_device]})
    assert rejected.status_code == 422 and busan_device in rejected.text
    assert [g["name"] for g in (await seoul.client.get(GROUPS)).json()["items"]] == ["Seoul only"]
    still = (await seoul.client.get(f"{GROUPS}/{gid}")).json()
    assert (still["name"], still["member_count"]) == ("Seoul only", 1)
    # A dynamic group counts only its own city's devices.
    await create_group(busan, name="All lamps", filter={"kind": "streetlight"})
    assert [g["member_count"] for g in (await busan.client.get(GROUPS)).json()["items"]] == [1]


async def test_devices_list_by_group_id(seoul):
    ids = [d["id"] for d in await add_devices(seoul, 4)]
    static = await create_group(seoul, name="Pair", device_ids=[ids[3], ids[1]])
    listed = (await seoul.client.get("/api/v1/devices", params={"group_id": static["id"]})).json()
    assert [d["id"] for d in listed["items"]] == [ids[1], ids[3]]
    narrowed = await seoul.client.get("/api/v1/devices", params={"group_id": static["id"], "tag": "none"})
    assert narrowed.json()["items"] == []
    missing = await seoul.client.get("/api/v1/devices", params={"group_id": str(uuid.uuid4())})
    assert missing.status_code == 404
    malformed = await seoul.client.get("/api/v1/devices", params={"group_id": "not-a-uuid"})
    assert malformed.status_code == 422 and fields_of(malformed) == {"group_id"}


async def test_roles(seoul, city_factory):
    viewer = await city_factory("daegu", Role.VIEWER)
    assert (await viewer.client.get(GROUPS)).status_code == 200
    assert (await viewer.client.post(GROUPS, json={"name": "x"})).status_code == 403
    operator = await city_factory("incheon", Role.OPERATOR)
    group = await create_group(operator, name="Operators may")
    crew = await city_factory("gwangju", Role.CREW)
    assert (await crew.client.patch(f"{GROUPS}/{uuid.uuid4()}", json={"name": "y"})).status_code == 403
    assert (await operator.client.patch(f"{GROUPS}/{group['id']}", json={"name": "z"})).status_code == 200
    assert (await operator.client.delete(f"{GROUPS}/{group['id']}")).status_code == 204


@pytest.mark.parametrize("body, field", [
    ({"name": "g", "filter": {"district": "Mapo-gu"}, "device_ids": []}, "device_ids"),
    ({"name": "g", "filter": {}}, "filter"),
    ({"name": "g", "filter": {"district": ""}}, "filter"),
    ({"name": "g", "filter": {"bbox": [127, 37, 126, 38]}}, "filter.bbox"),
    ({"name": "g", "filter": {"bbox": [1, 2, 3]}}, "filter.bbox"),
    ({"name": "g", "filter": {"bbox": [0, 95, 1, 96]}}, "filter.bbox"),
    ({"name": "g", "filter": {"near": {"lat": 95, "lon": 0}}}, "filter.near"),
    ({"name": "g", "filter": {"near": {"lat": 37, "lon": 127, "radius_m": 0}}}, "filter.near"),
    ({"name": "g", "filter": {"near": {"lat": 37, "lon": 127, "radius_m": 1e9}}}, "filter.near"),
    ({"name": "g", "filter": {"district": "x" * 301}}, "filter.district"),
    ({"name": "g", "filter": {"district": "Mapo\x00gu"}}, "filter.district"),
    ({"name": "g", "filter": {"tag": "a\nb"}}, "filter.tag"),
    ({"name": "   "}, "name"),
    ({"name": "bad\x00name"}, "name"),
    ({"name": "g", "description": "bell\x07"}, "description"),
])
async def test_domain_errors_are_422_naming_the_field(seoul, body, field):
    response = await seoul.client.post(GROUPS, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in fields_of(response), response.json()


@pytest.mark.parametrize("body, hint", [
    ({"name": "g", "filter": {"group_id": str(uuid.uuid4())}}, "group_id"),
    ({"name": "g", "filter": {"kind": "toaster"}}, "filter.kind"),
    ({"name": "g", "filter": {"near": {"lat": 1, "lon": 2, "x": 3}}}, "filter.near"),
    ({"name": "g", "filter": {"bbox": "1,2,3,4"}}, "filter.bbox"),
    ({"name": "g", "filter": "district=Mapo-gu"}, "filter"),
    ({"name": "g", "device_ids": ["not-a-uuid"]}, "device_ids"),
    ({"name": "x" * 201}, "name"),
    ({"name": ""}, "name"),
    ({"description": "no name"}, "name"),
    ({"name": "g", "members": []}, "members"),
])
async def test_malformed_bodies_are_400_naming_the_field(seoul, body, hint):
    response = await seoul.client.post(GROUPS, json=body)
    assert response.status_code == 400, response.text
    assert any(hint in e["field"] or hint in e["message"] for e in response.json()["errors"]), response.json()


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b'{"name": 5}', "é".encode("latin-1"),
                                 b'{"name": "g", "filter": {"bbox": [1e999, 0, 0, 0]}}'])
async def test_garbage_is_400_never_500(seoul, raw):
    group = await create_group(seoul, name="target")
    headers = {"content-type": "application/json"}
    for method, path in (("POST", GROUPS), ("PATCH", f"{GROUPS}/{group['id']}"),
                         ("POST", f"{GROUPS}/{group['id']}/members"),
                         ("DELETE", f"{GROUPS}/{group['id']}/members")):
        response = await seoul.client.request(method, path, content=raw, headers=headers)
        assert response.status_code in (400, 422), (method, path, response.text)


async def test_odd_ids_and_queries_are_never_500(seoul):
    group = await create_group(seoul, name="target", filter={"kind": "streetlight"})
    for path in (f"{GROUPS}/not-a-uuid", f"{GROUPS}/not-a-uuid/members"):
        assert (await seoul.client.get(path)).status_code == 400  # naming group_id (tests/api/test_errors.py)
    assert (await seoul.client.get(f"{GROUPS}/{group['id']}/members/x")).status_code in (404, 405)
    for params in ({"district": "Mapo\x00gu"}, {"near": "1,2", "radius_m": "nan"}, {"bbox": "a,b,c,d"},
                   {"limit": "many"}, {"cursor": "%%%"}):
        response = await seoul.client.get(f"{GROUPS}/{group['id']}/members", params=params)
        assert response.status_code in (400, 422), (params, response.text)
    patch = await seoul.client.patch(f"{GROUPS}/{group['id']}", json={"device_ids": []})
    assert patch.status_code == 400
    patch = await seoul.client.patch(f"{GROUPS}/{group['id']}", json={"name": None})
    assert patch.status_code == 400
