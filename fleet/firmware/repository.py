"""Release keys and images in PostgreSQL: rows for what they are, chunks for their bytes."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from fleet.firmware.models import CHUNK_SIZE, Image, ImageUpload, ReleaseKey

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

    async def page(self, tenant_id: UUID, *, after: tuple[datetime, UUID] | None, limit: int
                   ) -> tuple[list[Image], bool]:
        """Newest first; `after` is the (created_at, id) of the last image of the page before."""
        rows = await self.conn.fetch(
            f"""select {_IMAGE_COLUMNS} from firmware_images i
                where i.tenant_id = $1 and ($2::timestamptz is null or (i.created_at, i.id) < ($2, $3::uuid))
                order by i.created_at desc, i.id desc limit $4""",
            tenant_id, after[0] if after else None, after[1] if after else None, limit + 1)
        return [image_from_row(r) for r in rows[:limit]], len(rows) > limit

    async def chunk(self, tenant_id: UUID, image_id: UUID, seq: int) -> bytes | None:
        return await self.conn.fetchval(
            "select data from firmware_image_chunks where tenant_id = $1 and image_id = $2 and seq = $3",
            tenant_id, image_id, seq)

    async def lock(self, tenant_id: UUID, image_id: UUID) -> bool:
        """Lock the image row: a campaign being created for it (its foreign key check) waits,
        so a campaign count read after this is the one the delete acts on."""
        return await self.conn.fetchval(
            "select true from firmware_images where tenant_id = $1 and id = $2 for update",
            tenant_id, image_id) or False

    async def delete(self, tenant_id: UUID, image_id: UUID) -> None:
        """The image and (by cascade) its chunks."""
        await self.conn.execute("delete from firmware_images where tenant_id = $1 and id = $2", tenant_id, image_id)

    async def signature_and_key(self, tenant_id: UUID, image_id: UUID) -> asyncpg.Record | None:
        """The image's signature with the PEM of the key that verified it and whether that key
        has been revoked since."""
        return await self.conn.fetchrow(
            """select i.signature, k.public_key, k.name as key_name, k.revoked_at
               from firmware_images i join firmware_keys k on k.tenant_id = i.tenant_id and k.id = i.key_id
               where i.tenant_id = $1 and i.id = $2""", tenant_id, image_id)


_KEY_COLUMNS = "id, name, public_key, fingerprint, created_at, revoked_at"
# Chunks per INSERT: a set-based statement without encoding the whole image in one message.
_CHUNKS_PER_INSERT = 16


def key_from_row(row: asyncpg.Record) -> ReleaseKey:
    return ReleaseKey(**dict(row))


class KeyRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(self, tenant_id: UUID, name: str, public_key: str, fingerprint: str,
                     created_by: UUID | None) -> ReleaseKey:
        """Raises UniqueViolationError when the city already has this key live."""
        row = await self.conn.fetchrow(
            f"""insert into firmware_keys (tenant_id, name, public_key, fingerprint, created_by)
                values ($1, $2, $3, $4, $5) returning {_KEY_COLUMNS}""",
            tenant_id, name, public_key, fingerprint, created_by)
        return key_from_row(row)

    async def key(self, tenant_id: UUID, key_id: UUID, *, for_update: bool = False) -> ReleaseKey | None:
        row = await self.conn.fetchrow(
            f"select {_KEY_COLUMNS} from firmware_keys where tenant_id = $1 and id = $2"
            + (" for update" if for_update else ""), tenant_id, key_id)
        return key_from_row(row) if row else None

    async def keys(self, tenant_id: UUID) -> list[ReleaseKey]:
        """Newest first, revoked ones too."""
        rows = await self.conn.fetch(
            f"select {_KEY_COLUMNS} from firmware_keys where tenant_id = $1 order by created_at desc, id desc",
            tenant_id)
        return [key_from_row(r) for r in rows]

    async def live_keys(self, tenant_id: UUID) -> list[ReleaseKey]:
        """The keys that verify uploads, locked so none is revoked before the upload commits."""
        rows = await self.conn.fetch(
            f"""select {_KEY_COLUMNS} from firmware_keys where tenant_id = $1 and revoked_at is null
                order by created_at desc, id desc for share""", tenant_id)
        return [key_from_row(r) for r in rows]

    async def revoke(self, tenant_id: UUID, key_id: UUID) -> ReleaseKey | None:
        row = await self.conn.fetchrow(
            f"""update firmware_keys set revoked_at = now()
                where tenant_id = $1 and id = $2 and revoked_at is null returning {_KEY_COLUMNS}""",
            tenant_id, key_id)
        return key_from_row(row) if row else None


class ImageWriter:
    """Stores a new image: its row, then its bytes in chunks, in the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(self, tenant_id: UUID, upload: ImageUpload, *, size: int, sha256: bytes, key_id: UUID,
                     created_by: UUID | None) -> UUID:
        return await self.conn.fetchval(
            """insert into firmware_images (tenant_id, version, models, manufacturers, notes, filename, size,
                                            sha256, signature, key_id, chunk_size, created_by)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) returning id""",
            tenant_id, upload.version, list(upload.models), list(upload.manufacturers), upload.notes,
            upload.filename, size, sha256, upload.signature, key_id, CHUNK_SIZE, created_by)

    async def insert_chunks(self, tenant_id: UUID, image_id: UUID, content: bytes) -> int:
        """Writes `content` in CHUNK_SIZE rows; slices are views, so no second copy of the image."""
        view = memoryview(content)
        starts = range(0, len(content), CHUNK_SIZE)
        for first in range(0, len(starts), _CHUNKS_PER_INSERT):
            batch = starts[first:first + _CHUNKS_PER_INSERT]
            await self.conn.execute(
                """insert into firmware_image_chunks (tenant_id, image_id, seq, data)
                   select $1, $2, c.seq, c.data from unnest($3::integer[], $4::bytea[]) as c (seq, data)""",
                tenant_id, image_id, [start // CHUNK_SIZE for start in batch],
                [view[start:start + CHUNK_SIZE] for start in batch])
        return len(starts)
