"""Registering release keys and images; checking an image again before it goes to devices."""

from __future__ import annotations

import hashlib
from uuid import UUID

import asyncpg

from fleet.errors import FieldError, NotFound, ValidationFailed
from fleet.firmware.models import Image
from fleet.firmware.repository import ImageRepository
from fleet.firmware.signatures import verifies


async def verify_stored(conn: asyncpg.Connection, tenant_id: UUID, image_id: UUID) -> Image:
    """Read the stored bytes again and check their SHA-256 and signature (by a key the city has
    not revoked): what changed in the database since the upload never reaches a device."""
    repo = ImageRepository(conn)
    image = await repo.image(tenant_id, image_id)
    if image is None:
        raise NotFound(f"firmware image {image_id} not found")
    content = await repo.content(tenant_id, image_id)
    signed = await repo.signature_and_key(tenant_id, image_id)
    problems = []
    if len(content) != image.size or hashlib.sha256(content).hexdigest() != image.sha256:
        problems.append(FieldError("image_id", "the stored bytes no longer match the image's SHA-256"))
    elif signed["revoked_at"] is not None:
        problems.append(FieldError("image_id", f"the release key {signed['key_name']!r} that signed it was revoked"))
    elif not verifies(signed["public_key"], bytes(signed["signature"]), content):
        problems.append(FieldError("image_id", "the stored bytes no longer verify against the image's signature"))
    if problems:
        raise ValidationFailed("firmware image failed verification", problems)
    return image
