"""The SQL behind firmware delivery: which package a token downloads, image chunks and layout.

Run on system transactions: a device shows only its token, and the token says which city."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from fleet.firmware.models import Package

_PACKAGES_BY_TOKEN = """
    select d.token_hash, d.tenant_id, c.image_id, i.size, i.sha256, i.chunk_size, d.token_expires_at
    from firmware_campaign_devices d
    join firmware_campaigns c on c.tenant_id = d.tenant_id and c.id = d.campaign_id
    join firmware_images i on i.tenant_id = c.tenant_id and i.id = c.image_id
    where d.token_hash = any($1::bytea[]) and d.token_expires_at > now() and d.state = 'downloading'"""


class DeliveryRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def packages(self, token_hashes: list[bytes]) -> dict[bytes, Package]:
        """The packages these tokens download now, by token hash; a token that downloads
        nothing (unknown, expired, its device no longer downloading) is left out."""
        rows = await self.conn.fetch(_PACKAGES_BY_TOKEN, token_hashes)
        return {bytes(row["token_hash"]): Package(
            tenant_id=row["tenant_id"], image_id=row["image_id"], size=row["size"], sha256=bytes(row["sha256"]),
            expires_at=row["token_expires_at"], chunk_size=row["chunk_size"]) for row in rows}

    async def chunk(self, tenant_id: UUID, image_id: UUID, seq: int) -> bytes | None:
        return await self.conn.fetchval(
            "select data from firmware_image_chunks where tenant_id = $1 and image_id = $2 and seq = $3",
            tenant_id, image_id, seq)

    async def layout(self, tenant_id: UUID, image_id: UUID) -> tuple[int, int] | None:
        """(size, chunk size) of an image, None if the city has no such image."""
        row = await self.conn.fetchrow(
            "select size, chunk_size from firmware_images where tenant_id = $1 and id = $2",
            tenant_id, image_id)
        return (row["size"], row["chunk_size"]) if row else None
