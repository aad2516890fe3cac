"""Numbered SQL migrations, applied in order under an advisory lock so nodes can start together."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from fleet.db.roles import OWNER_ROLE, SYSTEM_ROLE, TENANT_ROLE, ensure_roles

log = structlog.get_logger(__name__)

# Arbitrary but fixed: every Fleet node contends for the same lock id.
MIGRATION_LOCK_ID = 0x666C656574_01


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("fleet.db").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return found


async def applied_versions(conn: asyncpg.Connection) -> set[int]:
    exists = await conn.fetchval("select to_regclass('public.schema_migrations') is not null")
    if not exists:
        return set()
    return {r["version"] for r in await conn.fetch("select version from schema_migrations")}


async def pending_migrations(conn: asyncpg.Connection) -> list[Migration]:
    done = await applied_versions(conn)
    return [m for m in available_migrations() if m.version not in done]


async def migrate(conn: asyncpg.Connection, *, service_password: str | None = None) -> list[int]:
    """Apply every pending migration; returns the versions applied by this call.

    `conn` is the admin connection (a superuser, or the role that owned Fleet's objects before
    roles were split, with CREATEROLE). It sets up the roles, hands every object to the owner
    role and runs the migrations as that role, so the logins the service uses own nothing.
    """
    applied: list[int] = []
    await conn.execute("select pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await ensure_roles(conn, service_password)
        await conn.execute(f"grant usage, create on schema public to {OWNER_ROLE}")
        await _hand_over_to_owner(conn)
        await conn.execute(f"set role {OWNER_ROLE}")
        try:
            await conn.execute(
                """create table if not exists schema_migrations (
                       version integer primary key,
                       name text not null,
                       checksum text not null,
                       applied_at timestamptz not null default now())"""
            )
            for migration in await pending_migrations(conn):
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                        migration.version, migration.name, migration.checksum,
                    )
                log.info("migration applied", version=migration.version, name=migration.name)
                applied.append(migration.version)
            if applied or await _grants_out_of_date(conn):
                # One transaction: other nodes keep running while this one starts, and between a
                # committed revoke and the grants their logins would be refused every table. The
                # partition lock first: a running node's partition upkeep takes it too, and the
                # two would otherwise each wait on a table the other has locked.
                async with conn.transaction():
                    await conn.execute("select pg_advisory_xact_lock(hashtext('fleet_telemetry_partitions'))")
                    await _grant_service_roles(conn)
        finally:
            await conn.execute("reset role")
    finally:
        await conn.execute("select pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied


async def _hand_over_to_owner(conn: asyncpg.Connection) -> None:
    """Databases migrated before the owner role existed belong to the admin: move every table,
    view, free-standing sequence and function of Fleet's schema to the owner role."""
    relations = await conn.fetch(
        """select c.relname, c.relkind::text as relkind from pg_class c
           join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'S')
             and c.relowner <> (select oid from pg_roles where rolname = $1)
             and not (c.relkind = 'S' and exists (
                 select 1 from pg_depend d where d.objid = c.oid and d.deptype in ('a', 'i')))""",
        OWNER_ROLE,
    )
    kinds = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "S": "sequence"}
    for row in relations:
        await conn.execute(f'alter {kinds[row["relkind"]]} public."{row["relname"]}" owner to {OWNER_ROLE}')
    functions = await conn.fetch(
        """select p.oid::regprocedure::text as signature from pg_proc p
           join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = 'public' and p.proowner <> (select oid from pg_roles where rolname = $1)""",
        OWNER_ROLE,
    )
    for row in functions:
        await conn.execute(f"alter function {row['signature']} owner to {OWNER_ROLE}")


async def _grants_out_of_date(conn: asyncpg.Connection) -> bool:
    """Whether some table lacks the grants `_grant_service_roles` gives, or a partition has
    any: a fresh database, one from before the logins existed, or one changed by hand. A node
    starting on a current database then touches no grant (each would lock its table)."""
    return await conn.fetchval(
        """select exists (
               select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where n.nspname = 'public' and c.relkind in ('r', 'p') and case
                   when c.relispartition then has_table_privilege($1, c.oid, 'select')
                                           or has_table_privilege($2, c.oid, 'select')
                   when not has_table_privilege($2, c.oid, 'select') then true
                   else exists (select 1 from pg_attribute a where a.attrelid = c.oid
                                  and a.attname = 'tenant_id' and not a.attisdropped)
                        and not has_table_privilege($1, c.oid, 'select')
               end)""",
        TENANT_ROLE, SYSTEM_ROLE)


async def _grant_service_roles(conn: asyncpg.Connection) -> None:
    """What each login may touch; row-level security then decides which rows.

    The app login gets the tenant-owned tables (those with `tenant_id`, and `tenants`); the
    system login gets every table. Neither may touch a telemetry partition directly, only
    through its parent, so a partition can't be read around the parent's policy.
    """
    await conn.execute(
        f"""revoke all on all tables in schema public from public, {TENANT_ROLE}, {SYSTEM_ROLE};
            grant usage on schema public to {TENANT_ROLE}, {SYSTEM_ROLE};
            grant select, insert, update, delete on all tables in schema public to {SYSTEM_ROLE};
            grant usage, select on all sequences in schema public to {TENANT_ROLE}, {SYSTEM_ROLE};
            revoke insert, update, delete on schema_migrations from {SYSTEM_ROLE};
            -- The audit log is append-only for the application.
            revoke update, delete on audit_log from {SYSTEM_ROLE};"""
    )
    tenant_tables = await conn.fetch(
        """select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition
             and (c.relname = 'tenants' or exists (
                 select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id'
                   and not a.attisdropped))"""
    )
    for row in tenant_tables:
        privileges = "select, insert" if row["relname"] == "audit_log" else "select, insert, update, delete"
        await conn.execute(f'grant {privileges} on public."{row["relname"]}" to {TENANT_ROLE}')
    await conn.execute("select fleet_seal_telemetry_partitions()")
