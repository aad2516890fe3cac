"""Numbered SQL migrations, applied in order under an advisory lock so nodes can start together."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from fleet.db.database import TENANT_ROLE

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


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply every pending migration; returns the versions applied by this call."""
    applied: list[int] = []
    await conn.execute("select pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """create table if not exists schema_migrations (
                   version integer primary key,
                   name text not null,
                   checksum text not null,
                   applied_at timestamptz not null default now())"""
        )
        await _ensure_tenant_role(conn)
        for migration in await pending_migrations(conn):
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )
            log.info("migration applied", version=migration.version, name=migration.name)
            applied.append(migration.version)
        await _grant_tenant_role(conn)
    finally:
        await conn.execute("select pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied


async def _ensure_tenant_role(conn: asyncpg.Connection) -> None:
    # Roles are cluster-wide, so several Fleet databases (or nodes) may race to create it.
    await conn.execute(
        f"""do $$ begin
              create role {TENANT_ROLE} nologin;
            exception when duplicate_object or unique_violation then null;
            end $$"""
    )
    await conn.execute(
        f"""do $$ begin
              execute format('grant {TENANT_ROLE} to %I', current_user);
            exception when others then null;
            end $$"""
    )


async def _grant_tenant_role(conn: asyncpg.Connection) -> None:
    await conn.execute(
        f"""grant usage on schema public to {TENANT_ROLE};
            grant select, insert, update, delete on all tables in schema public to {TENANT_ROLE};
            grant usage, select on all sequences in schema public to {TENANT_ROLE};
            revoke insert, update, delete on schema_migrations from {TENANT_ROLE};
            -- The audit log is append-only for the application.
            revoke update, delete on audit_log from {TENANT_ROLE};"""
    )
