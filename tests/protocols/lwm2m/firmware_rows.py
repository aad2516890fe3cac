"""Firmware rows for delivery tests, written as SQL the way the campaign engine leaves them:
a key, an image in chunks, a campaign, and a device's part in it with a download token."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from uuid import UUID

from fleet.firmware.delivery import new_token


async def store_image(db, tenant_id: UUID, content: bytes, *, chunk_size: int = 1024) -> UUID:
    """An image (signature and key are not checked on delivery, so any bytes do)."""
    async with db.system_tx() as conn:
        key_id = await conn.fetchval(
            """insert into firmware_keys (tenant_id, name, public_key, fingerprint)
               values ($1, 'test key', 'pem', $2) returning id""", tenant_id, os.urandom(32).hex())
        image_id = await conn.fetchval(
            """insert into firmware_images (tenant_id, version, size, sha256, signature, key_id, chunk_size)
               values ($1, '2.0.0', $2, $3, $4, $5, $6) returning id""",
            tenant_id, len(content), hashlib.sha256(content).digest(), bytes(64), key_id, chunk_size)
        await conn.executemany(
            "insert into firmware_image_chunks (tenant_id, image_id, seq, data) values ($1, $2, $3, $4)",
            [(tenant_id, image_id, n, content[o:o + chunk_size])
             for n, o in enumerate(range(0, len(content), chunk_size))])
    return image_id


async def downloading(db, tenant_id: UUID, device_id: UUID, image_id: UUID, *,
                      state: str = "downloading", expires_in: timedelta = timedelta(hours=1)) -> str:
    """A campaign with the device in it, in `state`, holding a fresh token; returns the token."""
    token, hashed = new_token()
    async with db.system_tx() as conn:
        campaign_id = await conn.fetchval(
            """insert into firmware_campaigns (tenant_id, image_id, status, target, settings)
               values ($1, $2, 'running', '{}'::jsonb, '{}'::jsonb) returning id""", tenant_id, image_id)
        await conn.execute(
            """insert into firmware_campaign_devices
                   (tenant_id, campaign_id, device_id, wave, state, delivery, token_hash, token_expires_at)
               values ($1, $2, $3, 0, $4, 'pull', $5, now() + $6::interval)""",
            tenant_id, campaign_id, device_id, state, hashed, expires_in)
    return token
