"""The wall, checked from the catalog: every table and partition with a `tenant_id` is found in
`pg_class`, must have row-level security enabled and forced with a tenant policy, and a
foreign city's rows must be invisible through each of them; the service's logins own nothing,
are not superusers, cannot bypass RLS and cannot switch their way to a role that can."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from fleet.db import Database
from fleet.db.doctor import walled_relations
from fleet.db.roles import OWNER_ROLE, SYSTEM_ROLE, TENANT_ROLE
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.security.models import SetPsk
from fleet.security.service import SecurityService
from fleet.telemetry.repository import TelemetryRepository
from fleet.telemetry.service import TelemetryMaintenance
from tests.conftest import TEST_SECURITY, make_city

LOGINS = (TENANT_ROLE, SYSTEM_ROLE)


async def populate(db: Database, slug: str, now: datetime):
    city = await make_city(db, slug)
    device = await DeviceService(db).create_validated(
        city.principal, NewDevice(DeviceKind.STREETLIGHT, f"{slug}-1", 37.5, 126.9, serial="S1"))
    await SecurityService(db, TEST_SECURITY).set_credential(city.principal, device.id, SetPsk(identity=f"{slug}-1"))
    async with db.system_tx() as conn:
        # One reading in today's partition, one in the default partition (a wild clock).
        await TelemetryRepository(conn).record([
            (city.tenant_id, device.id, now, "/3416/0/1", 50.0, None, None),
            (city.tenant_id, device.id, datetime(1999, 1, 1, tzinfo=UTC), "/3303/0/5700", 20.0, None, None),
        ])
    return city


@pytest.fixture
async def cities(db):
    now = datetime.now(UTC)
    await TelemetryMaintenance(db).run(now.date())
    return await populate(db, "seoul", now), await populate(db, "busan", now - timedelta(days=1))


async def test_every_table_and_partition_with_city_rows_is_walled(db, cities):
    async with db.system_tx() as conn:
        relations = await walled_relations(conn)
        partitions = [r["name"] for r in relations if r["partition"]]
        assert "telemetry_default" in partitions and len(partitions) > 5, partitions
        for relation in relations:
            assert relation["enabled"] and relation["forced"], relation["name"]
            assert relation["has_tenant_policy"], relation["name"]
        for name in partitions:
            for login in LOGINS:
                assert not await conn.fetchval("select has_table_privilege($1, $2, 'select')", login, name), \
                    (login, name)


async def test_the_logins_own_nothing_and_cannot_become_anything_that_does(db):
    async with db.system_tx() as conn:
        assert await conn.fetchval("select current_user") == SYSTEM_ROLE
        # Every role either login is, or can switch to with SET ROLE.
        reachable = await conn.fetch(
            """select r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreaterole,
                      exists (select 1 from pg_class c where c.relowner = r.oid)
                      or exists (select 1 from pg_proc p where p.proowner = r.oid)
                      or exists (select 1 from pg_namespace s where s.nspowner = r.oid)
                      or exists (select 1 from pg_database d where d.datdba = r.oid) as owns
               from pg_roles r
               where exists (select 1 from unnest($1::text[]) login
                             where pg_has_role(login, r.oid, 'SET'))""", list(LOGINS))
    assert {r["rolname"] for r in reachable} == {TENANT_ROLE, SYSTEM_ROLE}
    for role in reachable:
        assert not (role["rolsuper"] or role["rolbypassrls"] or role["rolcreaterole"] or role["owns"]), dict(role)
    async with db.tenant_tx(uuid.uuid4()) as conn:
        assert await conn.fetchval("select session_user") == TENANT_ROLE


@pytest.mark.parametrize("escape", [
    f"set role {SYSTEM_ROLE}", f"set role {OWNER_ROLE}", "set role postgres",
    "set session authorization postgres", f"set session authorization {SYSTEM_ROLE}",
])
async def test_a_tenant_transaction_cannot_switch_its_way_out(db, cities, escape):
    seoul, _ = cities
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.tenant_tx(seoul.tenant_id) as conn:
            await conn.execute(escape)


async def test_a_foreign_city_is_invisible_through_every_table_and_partition(db, cities):
    seoul, busan = cities
    async with db.system_tx() as conn:
        relations = await walled_relations(conn)
        # The system login sees both cities, so there are rows to hide.
        for table in ("devices", "telemetry", "device_state", "api_keys", "audit_log", "device_credentials"):
            assert await conn.fetchval(f"select count(distinct tenant_id) from {table}") == 2, table  # noqa: S608
    for reset in (False, True):
        for relation in relations:
            key = "id" if relation["name"] == "tenants" else "tenant_id"
            try:
                async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
                    if reset:
                        # Back to the login itself: still the app role, still one city.
                        await conn.execute("reset role")
                    foreign = await conn.fetchval(
                        f"select count(*) from {relation['name']} where {key} = $1", busan.tenant_id)  # noqa: S608
            except asyncpg.InsufficientPrivilegeError:
                assert relation["partition"], relation["name"]  # partitions: not even readable
                continue
            assert not relation["partition"], f"{relation['name']} is readable around its parent"
            assert foreign == 0, relation["name"]
    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        assert await conn.fetchval("select count(*) from telemetry") == 2
        assert await conn.fetchval("select count(distinct tenant_id) from devices") == 1


async def test_a_reference_across_cities_is_refused_by_the_database(db, cities):
    seoul, busan = cities
    async with db.system_tx() as conn:
        busan_device = await conn.fetchval("select id from devices where tenant_id = $1", busan.tenant_id)
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                """insert into device_state (tenant_id, device_id, path, time, v_num)
                   values ($1, $2, '/3/0/9', now(), 1)""", seoul.tenant_id, busan_device)


async def test_every_reference_between_city_tables_includes_the_city(db):
    """From the catalog, so a table added later cannot forget it: a foreign key from one
    tenant-owned table to another pairs tenant_id with tenant_id (`tenants` itself excepted)."""
    async with db.system_tx() as conn:
        keys = await conn.fetch(
            """select con.conname, con.confrelid::regclass::text as parent,
                      array(select a.attname from unnest(con.conkey) with ordinality k(n, i)
                            join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.n
                            order by k.i)::text[] as columns,
                      array(select a.attname from unnest(con.confkey) with ordinality k(n, i)
                            join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.n
                            order by k.i)::text[] as referenced
               from pg_constraint con
               where con.contype = 'f' and con.connamespace = 'public'::regnamespace
                 and exists (select 1 from pg_attribute a where a.attrelid = con.conrelid
                             and a.attname = 'tenant_id' and not a.attisdropped)""")
    between_cities = [k for k in keys if k["parent"] != "tenants"]
    assert len(between_cities) > 10
    for key in between_cities:
        pairs = set(zip(key["columns"], key["referenced"], strict=True))
        assert ("tenant_id", "tenant_id") in pairs, (key["conname"], pairs)
