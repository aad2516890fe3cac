"""SQL for tenants, API keys and the crews crew-role keys belong to."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from fleet.access.models import ApiKey, Role, Tenant, TenantUpdate

# Every node listens here and forgets a revoked key at once (fleet.access.revocations).
REVOCATION_CHANNEL = "fleet_keys"

_KEY_COLUMNS = "id, tenant_id, name, role, prefix, created_at, revoked_at, last_used_at, crew_id"


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(row["id"], row["slug"], row["name"], row["timezone"], row["created_at"],
                  row["firmware_approval_required"], row["allow_nosec_devices"], tuple(row["security_modes"]))


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(row["id"], row["tenant_id"], row["name"], Role(row["role"]), row["prefix"],
                  row["created_at"], row["revoked_at"], row["last_used_at"], row["crew_id"])


class TenantRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(self, slug: str, name: str, timezone: str, allow_nosec_devices: bool = False) -> Tenant:
        row = await self.conn.fetchrow(
            """insert into tenants (slug, name, timezone, allow_nosec_devices) values ($1, $2, $3, $4)
               returning *""",
            slug, name, timezone, allow_nosec_devices)
        return _tenant(row)

    async def by_slug(self, slug: str) -> Tenant | None:
        row = await self.conn.fetchrow("select * from tenants where slug = $1", slug)
        return _tenant(row) if row else None

    async def by_id(self, tenant_id: UUID) -> Tenant | None:
        row = await self.conn.fetchrow("select * from tenants where id = $1", tenant_id)
        return _tenant(row) if row else None

    async def update(self, tenant_id: UUID, changes: TenantUpdate) -> Tenant | None:
        """Set the fields `changes` gives; the column names are TenantUpdate's field names,
        never the caller's text."""
        given = {name: getattr(changes, name) for name in changes.__struct_fields__
                 if getattr(changes, name) is not None}
        sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(given, start=2)) or "id = id"
        row = await self.conn.fetchrow(f"update tenants set {sets} where id = $1 returning *",
                                       tenant_id, *given.values())
        return _tenant(row) if row else None

    async def all(self) -> list[Tenant]:
        return [_tenant(r) for r in await self.conn.fetch("select * from tenants order by slug")]

    async def device_counts(self) -> dict[UUID, int]:
        rows = await self.conn.fetch("select tenant_id, count(*) as devices from devices group by tenant_id")
        return {r["tenant_id"]: r["devices"] for r in rows}


class ApiKeyRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(self, tenant_id: UUID, name: str, role: Role, prefix: str, key_hash: bytes,
                     created_by: UUID | None, crew_id: UUID | None = None) -> ApiKey:
        row = await self.conn.fetchrow(
            f"""insert into api_keys (tenant_id, name, role, prefix, key_hash, created_by, crew_id)
                values ($1, $2, $3, $4, $5, $6, $7) returning {_KEY_COLUMNS}""",
            tenant_id, name, role.value, prefix, key_hash, created_by, crew_id)
        return _key(row)

    async def list_for_tenant(self, tenant_id: UUID) -> list[ApiKey]:
        rows = await self.conn.fetch(
            f"select {_KEY_COLUMNS} from api_keys where tenant_id = $1 order by created_at, id",
            tenant_id)
        return [_key(r) for r in rows]

    async def get(self, tenant_id: UUID, key_id: UUID) -> ApiKey | None:
        row = await self.conn.fetchrow(
            f"select {_KEY_COLUMNS} from api_keys where tenant_id = $1 and id = $2", tenant_id, key_id)
        return _key(row) if row else None

    async def revoke(self, tenant_id: UUID, key_id: UUID) -> ApiKey | None:
        """Revoke, and tell every node when (and only if) the transaction commits."""
        row = await self.conn.fetchrow(
            f"""with revoked as (
                    update api_keys set revoked_at = coalesce(revoked_at, now())
                    where tenant_id = $1 and id = $2 returning {_KEY_COLUMNS})
                select revoked.*, pg_notify($3, revoked.id::text) from revoked""",
            tenant_id, key_id, REVOCATION_CHANNEL)
        return _key(row) if row else None

    async def authenticate(self, key_hash: bytes) -> asyncpg.Record | None:
        """Look a live key up by hash and stamp its use (at most once a minute, to spare writes)."""
        return await self.conn.fetchrow(
            """with found as (
                   select k.id, k.tenant_id, k.role, k.crew_id, k.last_used_at, t.slug, t.timezone
                   from api_keys k join tenants t on t.id = k.tenant_id
                   where k.key_hash = $1 and k.revoked_at is null),
               touched as (
                   update api_keys set last_used_at = now()
                   where id = (select id from found)
                     and (last_used_at is null or last_used_at < now() - interval '60 seconds'))
               select id, tenant_id, role, crew_id, slug, timezone from found""",
            key_hash)



class SessionRepository:
    """Browser sessions (web_sessions): looked up across cities by the hash of their secret."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(self, tenant_id: UUID, api_key_id: UUID, secret_hash: bytes, idle_s: float,
                     user_agent: str | None) -> asyncpg.Record:
        return await self.conn.fetchrow(
            """insert into web_sessions (tenant_id, api_key_id, secret_hash, expires_at, user_agent)
               values ($1, $2, $3, now() + make_interval(secs => $4), $5)
               returning id, expires_at""",
            tenant_id, api_key_id, secret_hash, idle_s, user_agent)

    async def authenticate(self, secret_hash: bytes, idle_s: float) -> asyncpg.Record | None:
        """A live session of a live key, its idle time restarted (at most once a minute, to
        spare writes)."""
        return await self.conn.fetchrow(
            """with found as (
                   select s.id, s.tenant_id, s.api_key_id, s.last_used_at, k.role, k.crew_id,
                          t.slug, t.timezone
                   from web_sessions s
                   join api_keys k on k.tenant_id = s.tenant_id and k.id = s.api_key_id
                   join tenants t on t.id = s.tenant_id
                   where s.secret_hash = $1 and s.ended_at is null and s.expires_at > now()
                     and k.revoked_at is null),
               touched as (
                   update web_sessions set last_used_at = now(),
                                           expires_at = now() + make_interval(secs => $2)
                   where id = (select id from found) and last_used_at < now() - interval '60 seconds')
               select id, tenant_id, api_key_id, role, crew_id, slug, timezone from found""",
            secret_hash, idle_s)

    async def end(self, secret_hash: bytes) -> asyncpg.Record | None:
        """End the session; every node forgets what it cached of its key (the revocation
        channel), so the cookie stops working everywhere at once."""
        return await self.conn.fetchrow(
            """with ended as (
                   update web_sessions set ended_at = now()
                   where secret_hash = $1 and ended_at is null returning id, tenant_id, api_key_id)
               select ended.*, pg_notify($2, ended.api_key_id::text) from ended""",
            secret_hash, REVOCATION_CHANNEL)

    async def delete_ended(self, before_days: int = 30) -> int:
        """Forget sessions that ended or expired long ago (the leader's hourly sweep)."""
        status = await self.conn.execute(
            """delete from web_sessions
               where coalesce(ended_at, expires_at) < now() - make_interval(days => $1)""",
            before_days)
        return int(status.split()[-1])
