"""The database roles behind the tenant wall, and the logins the running service uses.

- `fleet_owner` (no login) owns every table, function and sequence. Migrations run as it; no
  login Fleet runs with is a member of it.
- `fleet_app` (login) is the wall itself: it sees only the rows of the city named by the
  transaction setting `fleet.tenant_id`, and is a member of no role, so inside a tenant
  transaction `reset role`, `set role` and `set session authorization` lead nowhere.
- `fleet_system` (login) does the cross-city work (key lookup, registration by endpoint, the
  telemetry group commit, command claims, sweeps, the scheduler) through policies of its own.
  It is a member of `fleet_app` only, so it can narrow itself to one city, never widen.

Neither login is a superuser, has BYPASSRLS or owns anything. Every tenant-owned table and
telemetry partition has row-level security enabled and forced, so the owner is walled too.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

OWNER_ROLE = "fleet_owner"
TENANT_ROLE = "fleet_app"
SYSTEM_ROLE = "fleet_system"


@dataclass(frozen=True, slots=True)
class ServiceLogins:
    """The DSNs of the two logins the running service connects with."""

    tenant_dsn: str
    system_dsn: str


def login_dsn(admin_dsn: str, role: str, password: str | None) -> str:
    """The admin DSN with its user (and password) replaced: same server, database and options."""
    parts = urlsplit(admin_dsn)
    host = parts.netloc.rpartition("@")[2]
    credentials = quote(role, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))


def service_logins(admin_dsn: str, password: str | None) -> ServiceLogins:
    return ServiceLogins(login_dsn(admin_dsn, TENANT_ROLE, password),
                         login_dsn(admin_dsn, SYSTEM_ROLE, password))


# Roles are cluster-wide: several Fleet databases (or nodes starting together) may race to
# create them, hence the duplicate handling. The attributes are restated every time so a role
# someone widened by hand is narrowed again.
_ROLE_STATEMENTS = [
    f"create role {OWNER_ROLE} nologin",
    f"create role {TENANT_ROLE} login",
    f"create role {SYSTEM_ROLE} login",
]
# pg_roles column -> the attribute that takes it away. Only a role that has an attribute may
# restate it (a CREATEROLE admin that is not a superuser may not say NOSUPERUSER), so each is
# restated when the admin has it and otherwise checked afterwards.
_NARROWED = {"rolsuper": "nosuperuser", "rolbypassrls": "nobypassrls", "rolcreatedb": "nocreatedb",
             "rolcreaterole": "nocreaterole", "rolreplication": "noreplication"}


async def ensure_roles(conn: asyncpg.Connection, password: str | None = None) -> None:
    """Create or narrow the roles; run by the admin connection (a superuser, or a role with
    CREATEROLE that may grant them to itself)."""
    for statement in _ROLE_STATEMENTS:
        await conn.execute(
            f"""do $$ begin {statement};
                exception when duplicate_object or unique_violation then null; end $$"""
        )
    admin = await conn.fetchrow(f"select {', '.join(_NARROWED)} from pg_roles where rolname = current_user")
    may_restate = " ".join(attribute for column, attribute in _NARROWED.items()
                           if admin[column] or admin["rolsuper"])
    await conn.execute(f"alter role {OWNER_ROLE} nologin {may_restate}")
    for login in (TENANT_ROLE, SYSTEM_ROLE):
        await conn.execute(f"alter role {login} login {may_restate}")
        if password is not None:
            await conn.execute(f"alter role {login} password {quote_literal(password)}")
    # The app login belonged to the admin before roles were split; memberships other than
    # system -> app are revoked so neither login can switch to anything wider.
    await _revoke_memberships(conn)
    await _grant_membership(conn, TENANT_ROLE, SYSTEM_ROLE)
    # The admin runs migrations as the owner, and once moves the objects it owned over to it.
    await _grant_membership(conn, OWNER_ROLE, "current_user")
    await _grant_membership(conn, TENANT_ROLE, "current_user")
    await _grant_membership(conn, SYSTEM_ROLE, "current_user")
    wide = await conn.fetch(
        f"""select rolname from pg_roles where rolname = any($1::text[])
              and ({' or '.join(_NARROWED)})""", [OWNER_ROLE, TENANT_ROLE, SYSTEM_ROLE])
    if wide:
        raise RuntimeError(
            f"roles {', '.join(r['rolname'] for r in wide)} have attributes beyond what Fleet allows "
            "(superuser, bypassrls, createdb, createrole, replication) and this admin login may not "
            "take them away: run the migration once as a superuser")


async def _grant_membership(conn: asyncpg.Connection, role: str, member: str) -> None:
    """Make `member` able to SET ROLE to `role`. From PostgreSQL 16 a membership may not allow
    that: a CREATEROLE admin is made an ADMIN-only member of each role it creates."""
    member_sql = member if member == "current_user" else f"'{member}'"
    may_set = "set" if conn.get_server_version().major >= 16 else "member"
    await conn.execute(
        f"""do $$ begin
              if not pg_has_role({member_sql}, '{role}', '{may_set}') then
                  execute format('grant {role} to %I', {member_sql});
              end if;
            end $$"""
    )


async def _revoke_memberships(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        """select r.rolname as role, m.rolname as member
           from pg_auth_members a
           join pg_roles r on r.oid = a.roleid
           join pg_roles m on m.oid = a.member
           where m.rolname = any($1::text[])
             and not (m.rolname = $2 and r.rolname = $3)""",
        [TENANT_ROLE, SYSTEM_ROLE], SYSTEM_ROLE, TENANT_ROLE,
    )
    for row in rows:
        await conn.execute(f'revoke "{row["role"]}" from "{row["member"]}"')


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
