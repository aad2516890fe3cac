"""GroupService on real PostgreSQL: row-level security, locking, and counts that match listings."""

from __future__ import annotations

import asyncio

import pytest

from fleet.access.models import Role
from fleet.access.service import TenantService, system_principal
from fleet.audit.models import AuditQuery
from fleet.audit.service import AuditService
from fleet.errors import Conflict, PermissionDenied
from fleet.groups.repository import GroupRepository
from fleet.groups.service import GroupService
from fleet.registry.service import DeviceService
from tests.conftest import make_city


async def register(db, city, count: int, start: int = 0, **fields) -> list:
    service = DeviceService(db)
    return [await service.create(city.principal, {
        "kind": "streetlight", "endpoint": f"{city.slug}-{n}", "lat": 37.55 + n * 0.001, "lon": 126.95,
        "district": "Jung-gu", **fields}) for n in range(start, start + count)]


async def all_members(service: GroupService, principal, group_id, **raw_filter) -> list:
    found, cursor = [], None
    while True:
        page = await service.members(principal, group_id, raw_filter, cursor=cursor, limit=3)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            return found


async def test_row_level_security_hides_another_citys_groups(db):
    seoul, busan = await make_city(db, "seoul"), await make_city(db, "busan")
    device = (await register(db, seoul, 1))[0]
    group = await GroupService(db).create(seoul.principal, {"name": "g", "device_ids": [device.id]})
    async with db.tenant_tx(busan.tenant_id) as conn:
        repo = GroupRepository(conn)
        # Even a query that names Seoul's tenant id sees nothing from inside Busan's transaction.
        assert await repo.get(seoul.tenant_id, group.id) is None
        assert await repo.device_statuses(seoul.tenant_id, [device.id]) == {}
        assert await repo.add_members(busan.tenant_id, group.id, [device.id]) == set()
        assert await conn.fetchval("select count(*) from device_group_members") == 0
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from device_group_members") == 1


async def test_member_count_matches_the_member_listing(db):
    seoul = await make_city(db, "seoul")
    service = GroupService(db)
    devices = await register(db, seoul, 10)
    devices += await register(db, seoul, 4, start=10, district="Mapo-gu", tags=["festival"])
    static = await service.create(seoul.principal, {"name": "static", "device_ids": [d.id for d in devices[5:13]]})
    # A member decommissioned later leaves the listing and the count, as in /devices.
    await DeviceService(db).decommission(seoul.principal, devices[11].id)
    await DeviceService(db).update(seoul.principal, devices[12].id, {"status": "maintenance"})
    groups = [
        await service.get(seoul.principal, static.id),
        await service.create(seoul.principal, {"name": "mapo", "filter": {"district": "Mapo-gu"}}),
        await service.create(seoul.principal, {"name": "festival",
                                               "filter": {"tag": "festival", "kind": "streetlight"}}),
        await service.create(seoul.principal, {"name": "retired", "filter": {"status": "decommissioned"}}),
        await service.create(seoul.principal, {"name": "near", "filter": {
            "near": {"lat": 37.552, "lon": 126.95, "radius_m": 300}}}),
        await service.create(seoul.principal, {"name": "box", "filter": {"bbox": [126.9, 37.553, 127, 37.556]}}),
    ]
    listed = {g.name: g.member_count for g in (await service.list(seoul.principal)).items}
    for group in groups:
        members = await all_members(service, seoul.principal, group.id)
        assert group.member_count == len(members) == listed[group.name], group.name
    assert listed == {"static": 7, "mapo": 3, "festival": 3, "retired": 1, "near": 5, "box": 4}


async def test_concurrent_member_add_and_switch_to_filter_leave_no_stray_members(db):
    seoul = await make_city(db, "seoul")
    service = GroupService(db)
    ids = [d.id for d in await register(db, seoul, 30)]
    for attempt in range(5):
        group = await service.create(seoul.principal, {"name": f"race {attempt}"})
        results = await asyncio.gather(
            service.add_members(seoul.principal, group.id, ids),
            service.update(seoul.principal, group.id, {"filter": {"district": "Jung-gu"}}),
            return_exceptions=True)
        # Adding after the switch is refused; adding before it is undone by the switch.
        assert all(not isinstance(r, Exception) or isinstance(r, Conflict) for r in results), results
        async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
            stray = await conn.fetchval("select count(*) from device_group_members where group_id = $1", group.id)
        assert stray == 0
        assert (await service.get(seoul.principal, group.id)).member_count == 30


async def test_console_changes_are_audited_as_the_system(db):
    seoul = await make_city(db, "seoul")
    console = system_principal(await TenantService(db).by_slug("seoul"))
    group = await GroupService(db).create(console, {"name": "from the console"})
    entries = await AuditService(db).search(seoul.principal, AuditQuery(entity_type="group"))
    assert [(e.action, e.actor, e.entity_id) for e in entries] == [("group.create", "system", str(group.id))]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.CREW])
async def test_read_only_roles_cannot_change_groups(db, role):
    city = await make_city(db, f"city-{role.value}", role)
    service = GroupService(db)
    assert (await service.list(city.principal)).items == []
    for call in (service.create(city.principal, {"name": "g"}),
                 service.add_members(city.principal, city.tenant_id, [city.tenant_id])):
        with pytest.raises(PermissionDenied):
            await call
