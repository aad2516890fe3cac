"""Migrations: concurrent runs on an empty database apply each migration once, and re-runs do nothing."""

from __future__ import annotations

import asyncio

import asyncpg

from fleet.db.database import TENANT_ROLE
from fleet.db.roles import OWNER_ROLE
from fleet.db.migrate import available_migrations, migrate, pending_migrations


async def test_concurrent_migrations_apply_each_once(empty_database_dsn):
    versions = [m.version for m in available_migrations()]
    connections = [await asyncpg.connect(empty_database_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(conn) for conn in connections))
        applied = [v for result in results for v in result]
        assert sorted(applied) == versions, results
        assert sum(1 for result in results if result) == 1
        rows = await connections[0].fetch("select version, name, checksum from schema_migrations order by version")
        assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
            (m.version, m.name, m.checksum) for m in available_migrations()]
        assert await pending_migrations(connections[0]) == []
        # The tenant role got its grants, and no more than that.
        privileges = await connections[0].fetchrow(
            """select has_table_privilege($1, 'devices', 'insert') as devices_insert,
                      has_table_privilege($1, 'audit_log', 'insert') as audit_insert,
                      has_table_privilege($1, 'audit_log', 'update') as audit_update,
                      has_table_privilege($1, 'audit_log', 'delete') as audit_delete,
                      has_table_privilege($1, 'schema_migrations', 'delete') as migrations_delete""",
            TENANT_ROLE)
        assert dict(privileges) == {"devices_insert": True, "audit_insert": True, "audit_update": False,
                                    "audit_delete": False, "migrations_delete": False}
        assert await migrate(connections[1]) == []
    finally:
        for conn in connections:
            await conn.close()


async def test_migrating_a_current_database_changes_nothing(database_dsn):
    conn = await asyncpg.connect(database_dsn)
    try:
        before = await conn.fetch("select version, applied_at from schema_migrations order by version")
        assert await migrate(conn) == []
        assert await migrate(conn) == []
        assert await conn.fetch("select version, applied_at from schema_migrations order by version") == before
        # The lock is released afterwards, so the next node is not kept waiting.
        assert await conn.fetchval(
            "select count(*) from pg_locks where locktype = 'advisory' and database = "
            "(select oid from pg_database where datname = current_database())") == 0
    finally:
        await conn.close()


async def test_a_database_from_before_the_owner_role_is_walled_in_place(empty_database_dsn):
    """A database an earlier Fleet migrated as its admin (who then owned everything) is handed
    to the owner role and walled by the next start, its rows kept."""
    conn = await asyncpg.connect(empty_database_dsn)
    try:
        await conn.execute("""create table schema_migrations (version integer primary key, name text not null,
                                  checksum text not null, applied_at timestamptz not null default now())""")
        for migration in available_migrations():
            if migration.version > 8:
                break
            await conn.execute(migration.sql)
            await conn.execute("insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                               migration.version, migration.name, migration.checksum)
        await conn.execute("insert into tenants (slug, name, timezone) values ('seoul', 'Seoul', 'Asia/Seoul')")
        assert await migrate(conn) == [m.version for m in available_migrations() if m.version > 8]
        owners = await conn.fetch(
            """select c.relname, pg_get_userbyid(c.relowner) as owner, c.relforcerowsecurity as forced
               from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')""")
        assert {r["owner"] for r in owners} == {OWNER_ROLE}
        assert all(r["forced"] for r in owners if r["relname"] in ("tenants", "devices", "telemetry")), owners
        functions = await conn.fetch("select proname, pg_get_userbyid(proowner) as owner from pg_proc "
                                     "where pronamespace = 'public'::regnamespace")
        assert {r["owner"] for r in functions} == {OWNER_ROLE}
        assert await conn.fetchval("select count(*) from tenants") == 1
    finally:
        await conn.close()
