"""What `fleet doctor` checks in the database: server, roles, row security, migrations, clock, device keys."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from fleet.db.migrate import available_migrations
from fleet.db.roles import OWNER_ROLE, SYSTEM_ROLE, TENANT_ROLE
from fleet.security.crypto import CredentialCipher, KeyOwner
from fleet.settings import SecuritySettings

# How far the database's clock may be from this machine's: registrations, queued commands and
# schedules compare the two, and NTP keeps well-run machines within milliseconds.
CLOCK_SKEW_S = 5.0


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's report: what was found, and when not ok what to do about it."""

    name: str
    status: Status
    found: str
    fix: str = ""


async def walled_relations(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every table and partition of Fleet's schema that holds city rows, with its row security."""
    return await conn.fetch(
        """select c.oid::regclass::text as name, c.relispartition as partition,
                  c.relrowsecurity as enabled, c.relforcerowsecurity as forced,
                  exists (select 1 from pg_policy p where p.polrelid = c.oid
                          and p.polname = 'tenant_wall') as has_tenant_policy
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'public' and c.relkind in ('r', 'p')
             and (c.relname = 'tenants' or exists (
                 select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id'
                   and not a.attisdropped))
           order by 1""")


async def check_server(conn: asyncpg.Connection) -> Check:
    version = await conn.fetchval("show server_version")
    database = await conn.fetchval("select current_database()")
    return Check("database", Status.OK, f"PostgreSQL {version}, database {database}")


async def check_roles(conn: asyncpg.Connection) -> Check:
    """The logins behind the wall (fleet.db.roles): present, narrow, owning nothing."""
    rows = await conn.fetch(
        """select r.rolname, r.rolsuper, r.rolbypassrls,
                  exists (select 1 from pg_class c where c.relowner = r.oid
                          and c.relnamespace = 'public'::regnamespace) as owns
           from pg_roles r where r.rolname = any($1::text[])""", [OWNER_ROLE, TENANT_ROLE, SYSTEM_ROLE])
    found = {r["rolname"]: r for r in rows}
    problems = [f"{role} missing" for role in (OWNER_ROLE, TENANT_ROLE, SYSTEM_ROLE) if role not in found]
    for role in (OWNER_ROLE, TENANT_ROLE, SYSTEM_ROLE):
        row = found.get(role)
        if row is None:
            continue
        if row["rolsuper"]:
            problems.append(f"{role} is a superuser")
        if row["rolbypassrls"]:
            problems.append(f"{role} has BYPASSRLS")
        if role != OWNER_ROLE and row["owns"]:
            problems.append(f"{role} owns tables")
    if problems:
        return Check("roles", Status.FAIL, "; ".join(problems),
                     "run `fleet migrate` as a superuser: it creates the roles, narrows them and hands "
                     f"every table to {OWNER_ROLE}")
    return Check("roles", Status.OK, f"{TENANT_ROLE} and {SYSTEM_ROLE}: not superuser, no BYPASSRLS, own nothing")


async def check_row_security(conn: asyncpg.Connection) -> Check:
    """Every table holding city rows is walled: row security enabled, forced, with its policy."""
    relations = await walled_relations(conn)
    if not relations:
        return Check("row-security", Status.FAIL, "no tables with city rows", "run `fleet migrate`")
    open_ = []
    for r in relations:
        missing = [what for what, present in (("not enabled", r["enabled"]), ("not forced", r["forced"]),
                                              ("no tenant_wall policy", r["has_tenant_policy"])) if not present]
        if missing:
            open_.append(f"{r['name']}: {', '.join(missing)}")
    if open_:
        tables = [entry.partition(":")[0] for entry in open_]
        return Check("row-security", Status.FAIL, "; ".join(open_),
                     "someone changed these by hand; restore with `alter table T enable row level security; "
                     f"alter table T force row level security;` for {', '.join(tables)} and find out who")
    return Check("row-security", Status.OK, f"{len(relations)} tables and partitions enabled and forced")


async def check_migrations(conn: asyncpg.Connection) -> Check:
    known = {m.version: m for m in available_migrations()}
    exists = await conn.fetchval("select to_regclass('public.schema_migrations') is not null")
    applied = {r["version"]: r["checksum"] for r in await conn.fetch(
        "select version, checksum from schema_migrations")} if exists else {}
    pending = sorted(set(known) - set(applied))
    unknown = sorted(set(applied) - set(known))
    if unknown:
        return Check("migrations", Status.FAIL, f"the database has migrations this Fleet does not know: {unknown}",
                     "run the Fleet version that migrated this database (or newer)")
    if pending:
        listed = ", ".join(map(str, pending)) if len(pending) <= 5 else f"{pending[0]} to {pending[-1]}"
        return Check("migrations", Status.FAIL, f"{len(pending)} pending ({listed})",
                     "run `fleet migrate` (every node also migrates as it starts)")
    changed = sorted(v for v, checksum in applied.items() if checksum != known[v].checksum)
    if changed:
        return Check("migrations", Status.WARN, f"applied migrations differ from this Fleet's text: {changed}",
                     "the migration files were edited after they ran; compare them with the release")
    return Check("migrations", Status.OK, f"all {len(known)} applied, latest {max(known)}")


async def check_clock(conn: asyncpg.Connection, *, tolerance_s: float = CLOCK_SKEW_S) -> Check:
    before = time.time()
    database_now = await conn.fetchval("select extract(epoch from clock_timestamp())::float8")
    after = time.time()
    skew = database_now - (before + after) / 2
    found = f"database clock {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} this machine's"
    if abs(skew) > tolerance_s:
        return Check("clock", Status.FAIL, found,
                     "synchronise both machines with NTP (chrony or systemd-timesyncd)")
    return Check("clock", Status.OK, found)


async def check_credentials(conn: asyncpg.Connection, security: SecuritySettings) -> Check:
    """FLEET_CREDENTIALS_KEY is set, and the newest stored PSK decrypts under it (a node started
    with another key would refuse every PSK device)."""
    fix = "set FLEET_CREDENTIALS_KEY to the key the device keys were stored under, the same on every node"
    try:
        row = await conn.fetchrow(
            """select id, tenant_id, device_id, purpose, key_ciphertext, key_nonce, (select count(*) from device_credentials
                                                      where mode = 'psk' and state <> 'retired') as stored
               from device_credentials where mode = 'psk' and state <> 'retired' order by created_at desc limit 1""")
    except asyncpg.UndefinedTableError:
        return Check("credentials", Status.WARN, "no device_credentials table", "run `fleet migrate`")
    if security.credentials_key is None:
        if row is None:
            return Check("credentials", Status.WARN, "FLEET_CREDENTIALS_KEY unset: no device PSK can be stored, "
                         "coaps is off", "set FLEET_CREDENTIALS_KEY (`openssl rand -hex 32`), the same on every node")
        return Check("credentials", Status.FAIL, f"FLEET_CREDENTIALS_KEY unset, and {row['stored']} device PSKs are "
                     "stored encrypted under one", fix)
    if row is None:
        return Check("credentials", Status.OK, "FLEET_CREDENTIALS_KEY set; no device PSK stored yet")
    if CredentialCipher(security).open(KeyOwner.of(row), row["key_ciphertext"], row["key_nonce"]) is None:
        return Check("credentials", Status.FAIL, "the newest device PSK does not decrypt under FLEET_CREDENTIALS_KEY",
                     fix)
    return Check("credentials", Status.OK, f"FLEET_CREDENTIALS_KEY set; {row['stored']} device PSKs, the newest decrypts")


CHECKS = (("database", check_server), ("roles", check_roles), ("row-security", check_row_security),
          ("migrations", check_migrations), ("clock", check_clock))


async def database_checks(conn: asyncpg.Connection) -> list[Check]:
    """Every database check, in the order they are reported; one the login may not run fails alone."""
    checks = []
    for name, check in CHECKS:
        try:
            checks.append(await check(conn))
        except asyncpg.PostgresError as exc:
            checks.append(Check(name, Status.FAIL, f"{type(exc).__name__}: {exc}",
                                "run `fleet doctor` with the admin login of FLEET_DATABASE_URL, the one that migrates"))
    return checks
