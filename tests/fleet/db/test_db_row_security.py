"""Row-level security is the wall between cities: raw queries without WHERE inside a tenant
transaction see only that city's rows, and writes for another city are refused."""

from __future__ import annotations

import asyncpg
import pytest

from fleet.db import Database
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import make_city

TENANT_TABLES = ("devices", "api_keys", "audit_log", "device_groups", "device_group_members")


async def populate(db: Database, slug: str):
    city = await make_city(db, slug)
    service = DeviceService(db)
    devices = [await service.create_validated(city.principal, NewDevice(
        DeviceKind.STREETLIGHT, f"{slug}-{n}", 37.5, 126.9, serial=f"S{n}")) for n in range(3)]
    async with db.system_tx() as conn:
        group = await conn.fetchval(
            "insert into device_groups (tenant_id, name) values ($1, 'night') returning id", city.tenant_id)
        await conn.executemany(
            "insert into device_group_members (tenant_id, group_id, device_id) values ($1, $2, $3)",
            [(city.tenant_id, group, d.id) for d in devices])
    return city


@pytest.fixture
async def cities(db):
    return await populate(db, "seoul"), await populate(db, "busan")


async def test_select_without_where_sees_one_city(db, cities):
    for city in cities:
        async with db.tenant_tx(city.tenant_id, readonly=True) as conn:
            assert await conn.fetchval("select current_user") == "fleet_app"
            tenants = await conn.fetch("select * from tenants")
            assert [t["id"] for t in tenants] == [city.tenant_id]
            for table in TENANT_TABLES:
                rows = await conn.fetch(f"select * from {table}")  # noqa: S608 - fixed names
                assert rows, table
                assert {r["tenant_id"] for r in rows} == {city.tenant_id}, table
    async with db.system_tx() as conn:
        for table in TENANT_TABLES:
            assert await conn.fetchval(f"select count(distinct tenant_id) from {table}") == 2  # noqa: S608


async def test_without_a_tenant_the_application_role_sees_nothing(db, cities):
    async with db.system_tx() as conn:
        await conn.execute("set local role fleet_app")
        for table in ("tenants", *TENANT_TABLES):
            assert await conn.fetchval(f"select count(*) from {table}") == 0, table  # noqa: S608


async def test_writes_into_another_city_are_refused(db, cities):
    seoul, busan = cities
    statements = [
        ("insert into devices (tenant_id, kind, endpoint, lat, lon) values ($1, 'streetlight', 'smuggled', 0, 0)",
         busan.tenant_id),
        ("insert into device_groups (tenant_id, name) values ($1, 'smuggled')", busan.tenant_id),
        ("insert into api_keys (tenant_id, role, prefix, key_hash) values ($1, 'admin', 'x', '\\x00')",
         busan.tenant_id),
    ]
    for sql, tenant in statements:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with db.tenant_tx(seoul.tenant_id) as conn:
                await conn.execute(sql, tenant)
    async with db.tenant_tx(seoul.tenant_id) as conn:
        # Updates and deletes simply find no rows of the other city.
        assert await conn.execute("update devices set district = 'x' where tenant_id = $1", busan.tenant_id) == "UPDATE 0"
        assert await conn.execute("delete from device_group_members where tenant_id = $1", busan.tenant_id) == "DELETE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.tenant_tx(seoul.tenant_id) as conn:
            await conn.execute("update devices set tenant_id = $1", busan.tenant_id)
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from devices where tenant_id = $1", busan.tenant_id) == 3
        assert await conn.fetchval("select count(*) from devices where endpoint = 'smuggled'") == 0


async def test_endpoint_lookup_across_cities_reveals_names_only(db, cities):
    seoul, _ = cities
    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        rows = await conn.fetch("select * from fleet_endpoints_taken($1::text[])", ["busan-0", "nowhere"])
    assert [tuple(r.items()) for r in rows] == [(("endpoint", "busan-0"),)]


async def test_a_command_cannot_point_at_another_citys_device_or_batch(db, cities):
    """Foreign keys ignore row-level security; composite keys refuse a cross-city command even
    from code that bypasses the tenant wall."""
    seoul, busan = cities
    async with db.system_tx() as conn:
        seoul_device = await conn.fetchval("select id from devices where tenant_id = $1 limit 1", seoul.tenant_id)
        busan_device = await conn.fetchval("select id from devices where tenant_id = $1 limit 1", busan.tenant_id)
        batch = await conn.fetchval(
            """insert into command_batches (tenant_id, operation, path, target, device_count, expires_at)
               values ($1, 'write', '/3416/0/1', '{}', 1, now() + interval '1 hour') returning id""", seoul.tenant_id)
    insert = """insert into commands (batch_id, tenant_id, device_id, operation, path, expires_at)
                values ($1, $2, $3, 'write', '/3416/0/1', now() + interval '1 hour')"""
    for tenant, device in ((seoul.tenant_id, busan_device), (busan.tenant_id, busan_device)):
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with db.system_tx() as conn:
                await conn.execute(insert, batch, tenant, device)
    async with db.system_tx() as conn:
        await conn.execute(insert, batch, seoul.tenant_id, seoul_device)
