"""Release keys, firmware images and what the city gives to register them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

# Default largest image a city may upload (FLEET_FIRMWARE_MAX_BYTES changes it).
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Bytes per stored chunk: a multiple of every CoAP block size (16-1024), so a block is always
# inside one chunk; large enough that a 64 MiB image is 256 rows.
CHUNK_SIZE = 256 * 1024


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/v1/firmware/keys: an Ed25519 public key in PEM."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    public_key: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


@dataclass(frozen=True, slots=True)
class ReleaseKey:
    id: UUID
    name: str
    public_key: str
    fingerprint: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ImageUpload:
    """What the multipart form carries, decoded by the adapter; the service checks the rest."""

    content: bytes
    version: str
    models: tuple[str, ...] = ()
    manufacturers: tuple[str, ...] = ()
    signature: bytes = b""
    notes: str = ""
    filename: str | None = None


@dataclass(frozen=True, slots=True)
class Image:
    id: UUID
    version: str
    models: tuple[str, ...]
    manufacturers: tuple[str, ...]
    notes: str
    filename: str | None
    size: int
    sha256: str  # hex
    key_id: UUID
    created_at: datetime
    # Campaigns that use it (an image in use cannot be deleted).
    campaigns: int = 0

    def fits(self, manufacturer: str | None, model: str | None) -> bool:
        """Whether a device of this manufacturer and model may take the image."""
        return ((not self.models or model in self.models)
                and (not self.manufacturers or manufacturer in self.manufacturers))


def comma_list(text: str) -> tuple[str, ...]:
    """`models` and `manufacturers` as the form gives them: "A, B,,C" is ("A", "B", "C"); "" is any."""
    return tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))


def too_large(max_image_bytes: int) -> str:
    """What a city is told when an image is over the limit, by the service or the route's body limit."""
    return f"a firmware image may be at most {max_image_bytes} bytes (FLEET_FIRMWARE_MAX_BYTES)"


@dataclass(frozen=True, slots=True)
class Package:
    """What a valid token downloads: one stored image of one city."""

    tenant_id: UUID
    image_id: UUID
    size: int
    sha256: bytes
    expires_at: datetime
    chunk_size: int

    @property
    def etag(self) -> bytes:
        """Tells a resuming device whether the package is still the one it began with."""
        return self.sha256[:8]

    def blocks(self, block_size: int) -> int:
        return -(-self.size // block_size)


@dataclass(frozen=True, slots=True)
class Block:
    package: Package
    number: int
    size: int  # the block size asked for; the payload is shorter on the last block
    payload: memoryview
    more: bool
