"""Creating cities, issuing and revoking API keys, and turning a bearer key into a principal."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import replace
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import msgspec
import structlog
from msgspec.structs import replace as replace_struct

from fleet.access.keycache import KeyCache
from fleet.access.models import (ApiKey, IssuedKey, Permission, Principal, Role, SignedIn, Tenant,
                                 TenantUpdate)
from fleet.access.repository import ApiKeyRepository, SessionRepository, TenantRepository
from fleet.audit.service import record
from fleet.db import Database
from fleet.errors import (Conflict, FieldError, NotFound, PermissionDenied, Unauthenticated,
                          ValidationFailed)
from fleet.registrations.models import SECURITY_POLICY_CHANGED
from fleet.registrations.repository import RegistrationRepository

log = structlog.get_logger(__name__)

KEY_SCHEME = "fleet"
SESSION_SCHEME = "fsess"


def hash_key(secret: str) -> bytes:
    # Keys are 256-bit random strings, so a fast hash is as strong as a slow one here
    # and keeps authentication to one indexed lookup.
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> tuple[str, str]:
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"


def _has_control_characters(text: str) -> bool:
    # PostgreSQL text cannot hold NUL at all; the other control characters only make trouble.
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _refuse_lockout(before: Tenant, changes: TenantUpdate) -> None:
    """A city that takes no DTLS mode and no NoSec device could connect no device at all."""
    modes = before.security_modes if changes.security_modes is None else changes.security_modes
    nosec = before.allow_nosec_devices if changes.allow_nosec_devices is None else changes.allow_nosec_devices
    if not modes and not nosec:
        field = "security_modes" if changes.security_modes is not None else "allow_nosec_devices"
        raise ValidationFailed("no device could connect to this city", [FieldError(
            field, "security_modes must name psk or rpk while allow_nosec_devices is false")])


def system_principal(tenant: Tenant) -> Principal:
    """The principal of an operator at the console (CLI), acting as the city's admin."""
    return Principal(tenant.id, tenant.slug, tenant.timezone, Role.ADMIN, None)


class TenantService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, slug: str, name: str, timezone: str, *, allow_nosec_devices: bool = False) -> Tenant:
        """A new city; its devices must use DTLS unless `allow_nosec_devices`."""
        errors = []
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            errors.append(FieldError("timezone", f"unknown IANA timezone {timezone!r}"))
        if not name.strip():
            errors.append(FieldError("name", "must not be empty"))
        elif _has_control_characters(name):
            errors.append(FieldError("name", "must not contain control characters"))
        if errors:
            raise ValidationFailed("invalid tenant", errors)
        async with self.db.system_tx() as conn:
            try:
                return await TenantRepository(conn).insert(slug, name, timezone, allow_nosec_devices)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"tenant {slug!r} already exists") from None
            except asyncpg.CheckViolationError:
                raise ValidationFailed("invalid tenant", [FieldError(
                    "slug", "2-63 lowercase letters, digits or dashes")]) from None

    async def by_slug(self, slug: str) -> Tenant:
        async with self.db.system_tx() as conn:
            tenant = await TenantRepository(conn).by_slug(slug)
        if tenant is None:
            raise NotFound(f"tenant {slug!r} not found")
        return tenant

    async def current(self, principal: Principal) -> Tenant:
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            tenant = await TenantRepository(conn).by_id(principal.tenant_id)
        if tenant is None:
            raise NotFound("tenant not found")
        return tenant

    async def update(self, principal: Principal, changes: TenantUpdate) -> Tenant:
        if not principal.can(Permission.MANAGE_TENANT):
            raise PermissionDenied("only admins may change the city's settings")
        if changes.security_modes is not None:
            # Stored once each, in a stable order, so the audit's before and after compare.
            changes = replace_struct(changes, security_modes=sorted(set(changes.security_modes)))
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = TenantRepository(conn)
            before = await repo.by_id(principal.tenant_id)
            if before is None:
                raise NotFound("tenant not found")
            _refuse_lockout(before, changes)
            tenant = await repo.update(principal.tenant_id, changes)
            if tenant is None:
                raise NotFound("tenant not found")
            await record(conn, principal, "tenant.update", "tenant", tenant.id,
                         msgspec.to_builtins(before), msgspec.to_builtins(tenant))
            nosec_ended = before.allow_nosec_devices and not tenant.allow_nosec_devices
            modes_narrowed = not set(before.security_modes) <= set(tenant.security_modes)
            if nosec_ended or modes_narrowed:
                # Registrations the new policy would refuse end with it, on every node: a device
                # registered in plain must come back over coaps, not keep Updating for ever.
                ended = await RegistrationRepository(conn).end_refused(
                    tenant.id, SECURITY_POLICY_CHANGED, plain=nosec_ended, secure_without_allowed_key=modes_narrowed)
                if ended:
                    log.info("registrations ended by the city's security policy", tenant=tenant.slug,
                             registrations=len(ended))
            return tenant

    async def all(self) -> list[Tenant]:
        async with self.db.system_tx() as conn:
            return await TenantRepository(conn).all()

    async def device_counts(self) -> dict[UUID, int]:
        """Devices per city (absent: none), for the console's list of cities."""
        async with self.db.system_tx() as conn:
            return await TenantRepository(conn).device_counts()


class ApiKeyService:
    """Keys are checked against the database at most every `cache_s` seconds per key.

    The cache spares every request a round trip. A revocation reaches every node's cache at
    once: this node's after the revoking transaction commits, the others' through a NOTIFY
    (fleet.access.revocations); a node that cannot listen caches nothing. Unknown keys are
    remembered too, so repeated wrong keys cost no round trip each.
    """

    def __init__(self, db: Database, *, cache_s: float = 5.0, unknown_cache_s: float = 30.0) -> None:
        self.db = db
        self.cache = KeyCache(ttl_s=cache_s, unknown_ttl_s=unknown_cache_s)

    def cached(self, secret: str, request_id: str | None = None) -> Principal | None:
        """The key's principal if this node checked it recently, without asking the database."""
        cached = self.cache.live(hash_key(secret), time.monotonic())
        return replace(cached, request_id=request_id) if cached is not None else None

    async def authenticate(self, secret: str, request_id: str | None = None) -> Principal:
        if not secret.startswith(f"{KEY_SCHEME}_") or len(secret) > 200:
            raise Unauthenticated("invalid API key")
        key_hash = hash_key(secret)
        now = time.monotonic()
        cached = self.cache.live(key_hash, now)
        if cached is not None:
            return replace(cached, request_id=request_id)
        if self.cache.unknown(key_hash, now):
            raise Unauthenticated("invalid or revoked API key")
        generation = self.cache.generation
        async with self.db.system_tx() as conn:
            row = await ApiKeyRepository(conn).authenticate(key_hash)
        if row is None:
            self.cache.remember_unknown(key_hash, now)
            raise Unauthenticated("invalid or revoked API key")
        principal = Principal(row["tenant_id"], row["slug"], row["timezone"], Role(row["role"]),
                              row["id"], None, row["crew_id"])
        self.cache.remember_live(key_hash, principal, generation, now)
        return replace(principal, request_id=request_id)

    async def issue(self, principal: Principal, role: Role, name: str = "",
                    crew_id: UUID | None = None) -> IssuedKey:
        """A key of `role`; a crew-role key may belong to a crew of the city (`crew_id`)."""
        self._require_admin(principal)
        if crew_id is not None and role is not Role.CREW:
            raise ValidationFailed("invalid key", [FieldError("crew_id", "only crew-role keys belong to a crew")])
        if len(name) > 200:
            raise ValidationFailed("invalid key", [FieldError("name", "at most 200 characters")])
        if _has_control_characters(name):
            raise ValidationFailed("invalid key", [FieldError("name", "must not contain control characters")])
        prefix, secret = new_secret()
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            try:
                async with conn.transaction():
                    key = await ApiKeyRepository(conn).insert(
                        principal.tenant_id, name, role, prefix, hash_key(secret), principal.api_key_id,
                        crew_id)
            except asyncpg.ForeignKeyViolationError:
                raise ValidationFailed("invalid key", [FieldError("crew_id", "no such crew in this city")]) from None
            await record(conn, principal, "apikey.create", "api_key", key.id, None, key)
        return IssuedKey(key, secret)

    async def list(self, principal: Principal) -> list[ApiKey]:
        self._require_admin(principal)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await ApiKeyRepository(conn).list_for_tenant(principal.tenant_id)

    async def revoke(self, principal: Principal, key_id: UUID) -> ApiKey:
        self._require_admin(principal)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = ApiKeyRepository(conn)
            before = await repo.get(principal.tenant_id, key_id)
            if before is None:
                raise NotFound(f"api key {key_id} not found")
            after = await repo.revoke(principal.tenant_id, key_id)
            await record(conn, principal, "apikey.revoke", "api_key", key_id, before, after)
        # Only now: forgotten before the commit, a request racing the revocation could still
        # read the key as live and cache it again.
        self.cache.forget_key(key_id)
        return after

    @staticmethod
    def _require_admin(principal: Principal) -> None:
        if not principal.can(Permission.MANAGE_KEYS):
            raise PermissionDenied("only admins may manage API keys")


def csrf_token(session_secret: str) -> str:
    """The token a session's pages send with every write (X-CSRF-Token). It derives from the
    cookie's secret, which another site's page can neither read (HttpOnly) nor guess, so
    nothing more needs keeping; one-way, so the token shown to scripts does not reveal the
    cookie."""
    return hashlib.sha256(f"csrf:{session_secret}".encode()).hexdigest()


class SessionService:
    """Browser sessions: an API key exchanged for a cookie. The cookie's principal is its key's,
    so a role sees in the browser exactly what its key may do over REST; revoking the key ends
    its sessions on every node (they share the key cache and its revocation channel)."""

    def __init__(self, db: Database, keys: ApiKeyService, *, idle_s: float = 12 * 3600) -> None:
        self.db = db
        self.keys = keys
        self.idle_s = idle_s

    async def sign_in(self, key_secret: str, user_agent: str | None = None) -> SignedIn:
        principal = await self.keys.authenticate(key_secret.strip())
        if principal.role is Role.REPORTER:
            raise PermissionDenied("a reporter key files citizens' reports (Open311); it cannot sign in")
        _, secret = new_secret()
        secret = f"{SESSION_SCHEME}_{secret.partition('_')[2]}"
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            row = await SessionRepository(conn).insert(
                principal.tenant_id, principal.api_key_id, hash_key(secret), self.idle_s,
                (user_agent or "")[:500] or None)
            signed_in = replace(principal, session_id=row["id"])
            await record(conn, signed_in, "session.start", "web_session", row["id"], None,
                         {"api_key_id": str(principal.api_key_id), "user_agent": user_agent})
        return SignedIn(secret, signed_in, row["expires_at"])

    async def authenticate(self, secret: str, request_id: str | None = None) -> Principal:
        if not secret.startswith(f"{SESSION_SCHEME}_") or len(secret) > 200:
            raise Unauthenticated("sign in again: the session cookie is not valid")
        cache = self.keys.cache
        secret_hash = hash_key(secret)
        now = time.monotonic()
        cached = cache.live(secret_hash, now)
        if cached is not None:
            return replace(cached, request_id=request_id)
        if cache.unknown(secret_hash, now):
            raise Unauthenticated("sign in again: the session has ended")
        generation = cache.generation
        async with self.db.system_tx() as conn:
            row = await SessionRepository(conn).authenticate(secret_hash, self.idle_s)
        if row is None:
            cache.remember_unknown(secret_hash, now)
            raise Unauthenticated("sign in again: the session has ended")
        principal = Principal(row["tenant_id"], row["slug"], row["timezone"], Role(row["role"]),
                              row["api_key_id"], None, row["crew_id"], row["id"])
        cache.remember_live(secret_hash, principal, generation, now)
        return replace(principal, request_id=request_id)

    async def sign_out(self, secret: str) -> None:
        """End the session if it is live; signing out twice, or with no session, is no error."""
        if not secret.startswith(f"{SESSION_SCHEME}_") or len(secret) > 200:
            return
        secret_hash = hash_key(secret)
        async with self.db.system_tx() as conn:
            ended = await SessionRepository(conn).end(secret_hash)
        self.keys.cache.remember_unknown(secret_hash, time.monotonic())
        if ended is not None:
            self.keys.cache.forget_key(ended["api_key_id"])
