"""The firmware benchmark's database: the ingest bench's embedded PostgreSQL and city, plus a
stored 128 KiB image and a running campaign with every device downloading on its own token."""

from __future__ import annotations

import hashlib
import os
from uuid import UUID

from bench.ingest.database import prepare
from fleet.db import Database
from fleet.firmware.delivery import new_token
from fleet.firmware.models import CHUNK_SIZE


async def downloading_devices(dsn: str, devices: int, content: bytes) -> list[str]:
    """Provision `devices` streetlights, store `content` as an image and put every device in a
    campaign, state downloading, with a token valid for a day; returns the tokens."""
    prepared = await prepare(dsn, [f"fw-bench-{n:06d}" for n in range(devices)])
    tokens = [new_token() for _ in range(devices)]
    db = await Database.connect(dsn, min_size=1, max_size=2)
    try:
        async with db.system_tx() as conn:
            image_id = await _store_image(conn, prepared.tenant_id, content)
            campaign_id = await conn.fetchval(
                """insert into firmware_campaigns (tenant_id, image_id, status, target, settings, device_count)
                   values ($1, $2, 'running', '{}'::jsonb, '{}'::jsonb, $3) returning id""",
                prepared.tenant_id, image_id, devices)
            await conn.execute(
                """insert into firmware_campaign_devices
                       (tenant_id, campaign_id, device_id, wave, state, delivery, token_hash, token_expires_at)
                   select $1, $2, d, 0, 'downloading', 'pull', h, now() + interval '1 day'
                   from unnest($3::uuid[], $4::bytea[]) as t (d, h)""",
                prepared.tenant_id, campaign_id, list(prepared.device_ids.values()), [h for _, h in tokens])
    finally:
        await db.close()
    return [token for token, _ in tokens]


async def _store_image(conn, tenant_id: UUID, content: bytes) -> UUID:
    key_id = await conn.fetchval(
        """insert into firmware_keys (tenant_id, name, public_key, fingerprint)
           values ($1, 'bench key', 'not checked on delivery', $2) returning id""", tenant_id, os.urandom(32).hex())
    image_id = await conn.fetchval(
        """insert into firmware_images (tenant_id, version, size, sha256, signature, key_id, chunk_size)
           values ($1, 'bench', $2, $3, $4, $5, $6) returning id""",
        tenant_id, len(content), hashlib.sha256(content).digest(), bytes(64), key_id, CHUNK_SIZE)
    await conn.executemany(
        "insert into firmware_image_chunks (tenant_id, image_id, seq, data) values ($1, $2, $3, $4)",
        [(tenant_id, image_id, n, content[o:o + CHUNK_SIZE]) for n, o in enumerate(range(0, len(content), CHUNK_SIZE))])
    return image_id
