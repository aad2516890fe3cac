"""Test helpers: a signed firmware image stored as the images service stores it, devices of a
model and version, and more keys of a city (SQL and real keys, no mocks)."""

from __future__ import annotations

import hashlib
import os
from uuid import UUID

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.access.models import Principal, Role
from fleet.access.service import ApiKeyService, system_principal
from fleet.access.repository import TenantRepository
from fleet.db import Database
from fleet.firmware.models import CHUNK_SIZE


async def add_image(db: Database, tenant_id: UUID, version: str = "2.0.0", *, models: tuple[str, ...] = (),
                    manufacturers: tuple[str, ...] = (), size: int = 3000) -> UUID:
    """A release key and an image it signed, bytes in chunks; returns the image's id."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    content = os.urandom(size)
    async with db.system_tx() as conn:
        key_id = await conn.fetchval(
            """insert into firmware_keys (tenant_id, name, public_key, fingerprint)
               values ($1, 'release', $2, $3) returning id""", tenant_id, pem, hashlib.sha256(raw).hexdigest())
        image_id = await conn.fetchval(
            """insert into firmware_images (tenant_id, version, models, manufacturers, size, sha256,
                                            signature, key_id, chunk_size)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning id""",
            tenant_id, version, list(models), list(manufacturers), len(content),
            hashlib.sha256(content).digest(), private.sign(content), key_id, CHUNK_SIZE)
        await conn.executemany(
            "insert into firmware_image_chunks (tenant_id, image_id, seq, data) values ($1, $2, $3, $4)",
            [(tenant_id, image_id, n, content[o:o + CHUNK_SIZE])
             for n, o in enumerate(range(0, len(content), CHUNK_SIZE))])
    return image_id


async def tamper(db: Database, tenant_id: UUID, image_id: UUID) -> None:
    async with db.system_tx() as conn:
        await conn.execute("""update firmware_image_chunks set data = overlay(data placing '\\x00'::bytea from 1)
                              where tenant_id = $1 and image_id = $2 and seq = 0""", tenant_id, image_id)


async def add_devices(db: Database, tenant_id: UUID, count: int, *, prefix: str, manufacturer: str | None = "Acme",
                      model: str | None = "SL-1", version: str | None = "1.0.0") -> list[UUID]:
    """`count` streetlights of one model and version, in one statement; ids in creation order."""
    async with db.system_tx() as conn:
        rows = await conn.fetch(
            """insert into devices (tenant_id, kind, endpoint, lat, lon, manufacturer, model, firmware_version)
               select $1, 'streetlight', $2 || '-' || n, 37.5, 127.0, $3, $4, $5
               from generate_series(1, $6) n returning id, seq""",
            tenant_id, prefix, manufacturer, model, version, count)
    return [r["id"] for r in sorted(rows, key=lambda r: r["seq"])]


async def set_state(db: Database, tenant_id: UUID, campaign_id: UUID, device_ids: list[UUID], state: str,
                    reason: str | None = None) -> None:
    """What the rollout engine would do: move devices of a campaign to `state`."""
    async with db.system_tx() as conn:
        await conn.execute(
            """update firmware_campaign_devices set state = $4, reason = $5
               where tenant_id = $1 and campaign_id = $2 and device_id = any($3::uuid[])""",
            tenant_id, campaign_id, device_ids, state, reason)


async def another_key(db: Database, tenant_id: UUID, role: Role = Role.ADMIN, name: str = "second") -> tuple[Principal, str]:
    """One more key of the city: its principal and its secret."""
    async with db.system_tx() as conn:
        tenant = await TenantRepository(conn).by_id(tenant_id)
    issued = await ApiKeyService(db).issue(system_principal(tenant), role, name)
    return Principal(tenant.id, tenant.slug, tenant.timezone, role, issued.key.id), issued.secret


async def require_approval(db: Database, tenant_id: UUID, required: bool = True) -> None:
    async with db.system_tx() as conn:
        await conn.execute("update tenants set firmware_approval_required = $2 where id = $1", tenant_id, required)
