"""Registering release keys and images; checking an image again before it goes to devices."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from uuid import UUID

import asyncpg
import structlog

from fleet import cursors
from fleet.access.models import Permission, Principal
from fleet.audit.service import record
from fleet.db import Database
from fleet.errors import Conflict, FieldError, NotFound, PayloadTooLarge, ValidationFailed
from fleet.firmware.models import (DEFAULT_MAX_IMAGE_BYTES, Image, ImageUpload, KeyCreate, ReleaseKey,
                                  too_large)
from fleet.firmware.repository import ImageRepository, ImageWriter, KeyRepository
from fleet.firmware.signatures import BadKey, fingerprint, load_public_key, verifies
from fleet.registry.models import Page
from fleet.registry.service import MAX_PAGE, require

log = structlog.get_logger(__name__)
# A compatible-model or manufacturer name is a /3/0/1 or /3/0/0 string: short.
MAX_NAME = 100
MAX_NAMES = 100


async def verify_stored(conn: asyncpg.Connection, tenant_id: UUID, image_id: UUID) -> Image:
    """Read the stored bytes again and check their SHA-256 and signature (by a key the city has
    not revoked): what changed in the database since the upload never reaches a device."""
    repo = ImageRepository(conn)
    image = await repo.image(tenant_id, image_id)
    if image is None:
        raise NotFound(f"firmware image {image_id} not found")
    content = await repo.content(tenant_id, image_id)
    signed = await repo.signature_and_key(tenant_id, image_id)
    # Hashing and verifying up to 64 MiB takes a fifth of a second: off the event loop, which
    # also serves devices' blocks and the leader's other jobs.
    digest = await asyncio.to_thread(lambda: hashlib.sha256(content).hexdigest())
    problems = []
    if len(content) != image.size or digest != image.sha256:
        problems.append(FieldError("image_id", "the stored bytes no longer match the image's SHA-256"))
    elif signed["revoked_at"] is not None:
        problems.append(FieldError("image_id", f"the release key {signed['key_name']!r} that signed it was revoked"))
    elif not await asyncio.to_thread(verifies, signed["public_key"], bytes(signed["signature"]), content):
        problems.append(FieldError("image_id", "the stored bytes no longer verify against the image's signature"))
    if problems:
        raise ValidationFailed("firmware image failed verification", problems)
    return image


def encode_cursor(image: Image) -> str:
    return cursors.encode(b"fi:", [image.created_at.isoformat(), str(image.id)])


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    return cursors.decode(b"fi:", cursor, tuple[datetime, UUID])


def _checked(upload: ImageUpload, max_image_bytes: int) -> ImageUpload:
    """The upload's fields by the rules a form cannot say; PayloadTooLarge over the limit."""
    if len(upload.content) > max_image_bytes:
        raise PayloadTooLarge(too_large(max_image_bytes))
    problems = []
    if not upload.content:
        problems.append(FieldError("file", "is empty"))
    version = upload.version.strip()
    if not version or len(version) > 100 or not version.isprintable():
        problems.append(FieldError("version", "must be one line of 1-100 characters"))
    for field, names in (("models", upload.models), ("manufacturers", upload.manufacturers)):
        if len(names) > MAX_NAMES or any(len(n) > MAX_NAME or not n.isprintable() for n in names):
            problems.append(FieldError(field, f"at most {MAX_NAMES} names of at most {MAX_NAME} characters"))
    if len(upload.notes) > 20000:
        problems.append(FieldError("notes", "at most 20000 characters"))
    if problems:
        raise ValidationFailed("invalid firmware image", problems)
    # Browsers may send a path; only its last part names the file.
    filename = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()[:255] or None
    return ImageUpload(content=upload.content, version=version, models=upload.models,
                       manufacturers=upload.manufacturers, signature=upload.signature, notes=upload.notes,
                       filename=filename if filename and filename.isprintable() else None)


def _signed_by(keys: list[ReleaseKey], signature: bytes, content: bytes) -> tuple[ReleaseKey | None, bytes]:
    """The first live key whose signature `signature` is, and the content's SHA-256."""
    digest = hashlib.sha256(content).digest()
    return next((k for k in keys if verifies(k.public_key, signature, content)), None), digest


class FirmwareService:
    """The city's release keys and images: admins register and remove them, everyone reads."""

    def __init__(self, db: Database, *, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
        self.db = db
        self.max_image_bytes = max_image_bytes

    async def register_key(self, principal: Principal, data: KeyCreate) -> ReleaseKey:
        require(principal, Permission.MANAGE_FIRMWARE)
        name = data.name.strip()
        if not name or not name.isprintable():
            raise ValidationFailed("invalid release key", [FieldError("name", "must be one line of text")])
        try:
            key = load_public_key(data.public_key)
        except BadKey as exc:
            raise ValidationFailed("invalid release key", [FieldError("public_key", str(exc))]) from None
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            try:
                async with conn.transaction():
                    created = await KeyRepository(conn).insert(principal.tenant_id, name, data.public_key,
                                                               fingerprint(key), principal.api_key_id)
            except asyncpg.UniqueViolationError:
                raise Conflict("this public key is already a live release key of this city") from None
            await record(conn, principal, "firmware_key.create", "firmware_key", created.id, None, created)
        return created

    async def keys(self, principal: Principal) -> list[ReleaseKey]:
        """Every release key of the city, newest first, revoked ones with their time."""
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await KeyRepository(conn).keys(principal.tenant_id)

    async def revoke_key(self, principal: Principal, key_id: UUID) -> None:
        """From now on the key verifies nothing: no new upload, no campaign start of its images.
        Its row stays, since images name the key that verified them; revoking twice is a no-op."""
        require(principal, Permission.MANAGE_FIRMWARE)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = KeyRepository(conn)
            before = await repo.key(principal.tenant_id, key_id, for_update=True)
            if before is None:
                raise NotFound(f"release key {key_id} not found")
            after = await repo.revoke(principal.tenant_id, key_id)
            if after is not None:
                await record(conn, principal, "firmware_key.revoke", "firmware_key", key_id, before, after)

    async def upload(self, principal: Principal, upload: ImageUpload) -> Image:
        """Store an image whose signature one of the city's live keys verifies; 422 otherwise."""
        require(principal, Permission.MANAGE_FIRMWARE)
        upload = _checked(upload, self.max_image_bytes)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            keys = await KeyRepository(conn).live_keys(principal.tenant_id)
            # Verifying 64 MiB takes a tenth of a second per key: off the event loop.
            key, sha256 = await asyncio.to_thread(_signed_by, keys, upload.signature, upload.content)
            if key is None:
                raise ValidationFailed("firmware image refused", [FieldError(
                    "signature", "signature does not verify with any release key of this city")])
            writer = ImageWriter(conn)
            image_id = await writer.insert(principal.tenant_id, upload, size=len(upload.content), sha256=sha256,
                                           key_id=key.id, created_by=principal.api_key_id)
            chunks = await writer.insert_chunks(principal.tenant_id, image_id, upload.content)
            image = await ImageRepository(conn).image(principal.tenant_id, image_id)
            await record(conn, principal, "firmware_image.create", "firmware_image", image_id, None, image)
        log.info("firmware image stored", image_id=str(image_id), size=image.size, chunks=chunks,
                 key=key.name)
        return image

    async def images(self, principal: Principal, *, cursor: str | None = None, limit: int = 100) -> Page:
        require(principal, Permission.READ)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed("invalid limit", [FieldError("limit", f"must be 1-{MAX_PAGE}")])
        after = decode_cursor(cursor) if cursor else None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            images, more = await ImageRepository(conn).page(principal.tenant_id, after=after, limit=limit)
        return Page(images, encode_cursor(images[-1]) if more else None)

    async def image(self, principal: Principal, image_id: UUID) -> Image:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            image = await ImageRepository(conn).image(principal.tenant_id, image_id)
        if image is None:
            raise NotFound(f"firmware image {image_id} not found")
        return image

    async def download(self, principal: Principal, image_id: UUID) -> tuple[Image, AsyncIterator[bytes]]:
        """The image and its bytes, read chunk by chunk as the client takes them (admins only)."""
        require(principal, Permission.MANAGE_FIRMWARE)
        image = await self.image(principal, image_id)
        return image, self._chunks(principal.tenant_id, image)

    async def _chunks(self, tenant_id: UUID, image: Image) -> AsyncIterator[bytes]:
        # One short transaction per chunk: a slow client does not hold a connection for minutes.
        sent = seq = 0
        while sent < image.size:
            async with self.db.tenant_tx(tenant_id, readonly=True) as conn:
                data = await ImageRepository(conn).chunk(tenant_id, image.id, seq)
            if data is None:
                # Deleted while being downloaded: cut the response short rather than end it as if whole.
                log.info("firmware image went away during its download", image_id=str(image.id), sent=sent)
                raise NotFound(f"firmware image {image.id} was deleted during the download")
            sent += len(data)
            seq += 1
            yield data

    async def delete(self, principal: Principal, image_id: UUID) -> None:
        require(principal, Permission.MANAGE_FIRMWARE)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = ImageRepository(conn)
            if not await repo.lock(principal.tenant_id, image_id):
                raise NotFound(f"firmware image {image_id} not found")
            image = await repo.image(principal.tenant_id, image_id)
            if image.campaigns:
                raise Conflict(f"firmware image {image_id} is used by {image.campaigns} "
                               f"campaign{'s' if image.campaigns != 1 else ''}; it cannot be deleted")
            await repo.delete(principal.tenant_id, image_id)
            await record(conn, principal, "firmware_image.delete", "firmware_image", image_id, image, None)
