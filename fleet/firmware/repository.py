"""Release keys and images in PostgreSQL: rows for what they are, chunks for their bytes."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from fleet.firmware.models import Image

_IMAGE_COLUMNS = """i.id, i.version, i.models, i.manufacturers, i.notes, i.filename, i.size,
                    encode(i.sha256, 'hex') as sha256, i.key_id, i.created_at,
                    (select count(*) from firmware_campaigns c
                     where c.tenant_id = i.tenant_id and c.image_id = i.id) as campaigns"""


def image_from_row(row: asyncpg.Record) -> Image:
    return Image(id=row["id"], version=row["version"], models=tuple(row["models"]),
                 manufacturers=tuple(row["manufacturers"]), notes=row["notes"], filename=row["filename"],
                 size=row["size"], sha256=row["sha256"], key_id=row["key_id"],
                 created_at=row["created_at"], campaigns=row["campaigns"])


class ImageRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def image(self, tenant_id: UUID, image_id: UUID) -> Image | None:
        row = await self.conn.fetchrow(
            f"select {_IMAGE_COLUMNS} from firmware_images i where i.tenant_id = $1 and i.id = $2",
            tenant_id, image_id)
        return image_from_row(row) if row else None

    async def content(self, tenant_id: UUID, image_id: UUID) -> bytes:
        """The whole image, chunk by chunk in order (an image is at most the configured limit)."""
        rows = await self.conn.fetch(
            """select data from firmware_image_chunks where tenant_id = $1 and image_id = $2
               order by seq""", tenant_id, image_id)
        return b"".join(r["data"] for r in rows)

    async def signature_and_key(self, tenant_id: UUID, image_id: UUID) -> asyncpg.Record | None:
        """The image's signature with the PEM of the key that verified it and whether that key
        has been revoked since."""
        return await self.conn.fetchrow(
            """select i.signature, k.public_key, k.name as key_name, k.revoked_at
               from firmware_images i join firmware_keys k on k.tenant_id = i.tenant_id and k.id = i.key_id
               where i.tenant_id = $1 and i.id = $2""", tenant_id, image_id)
