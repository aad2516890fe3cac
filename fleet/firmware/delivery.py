"""Serving firmware packages to devices: one-time tokens, their packages, and the image bytes
cached per node so that a block is a slice of memory, not a query."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from uuid import UUID

import structlog

from fleet.db import Database
from fleet.errors import NotFound, ValidationFailed
from fleet.firmware.caches import CHUNK_BUDGET_BYTES, TOKEN_TTL_S, ChunkCache, TokenCache, token_hash
from fleet.firmware.delivery_repository import DeliveryRepository
from fleet.firmware.models import Block, Package

log = structlog.get_logger("fleet.firmware")

# The block a request without Block2 gets (RFC 7959 §2.2: the server's choice), the largest.
DEFAULT_BLOCK_SIZE = 1024
_TOKEN_BYTES = 18  # 144 bits: 24 URL-safe characters, no padding
# The resource a Package URI is written to (and read back from).
PACKAGE_URI_PATH = "/5/0/1"
_TOKEN_IN_URI = re.compile(r"(/fw/)[^/?#]+")
REDACTED_TOKEN = "<token>"


def new_token() -> tuple[str, bytes]:
    """A one-time download token for a Package URI and the SHA-256 stored in its row."""
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    return token, token_hash(token)


def package_uri(base_uri: str, token: str) -> str:
    return f"{base_uri.rstrip('/')}/fw/{token}"


def without_token(path: str, value: object) -> object:
    """A value as Fleet stores or shows it: a Package URI's token left out. The token fetches
    the city's image (admins only, on REST) and must not outlive its device's download in
    device state, telemetry, command results or events that anyone with READ sees; only the
    device's own command keeps it, for the dispatcher to write."""
    if path == PACKAGE_URI_PATH and isinstance(value, str):
        return _TOKEN_IN_URI.sub(r"\1" + REDACTED_TOKEN, value)
    return value


def default_base_uri(coap_host: str, coap_port: int, scheme: str = "coap") -> str:
    """Where devices reach this node's listener (`scheme` coaps: its DTLS one) when no
    FLEET_FIRMWARE_DOWNLOAD_URI (FLEET_COAPS_PUBLIC_URI) says."""
    host = "127.0.0.1" if coap_host in ("::", "0.0.0.0", "") else coap_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{coap_port}"


def coaps_server_uri(public_uri: str | None, coap_host: str, coaps_port: int | None) -> str | None:
    """The coaps:// URI devices reach this node's DTLS listener at: FLEET_COAPS_PUBLIC_URI when
    set, else this host and coaps port (None: no coaps port). The bootstrap server writes it,
    PUT …/security answers it, secure firmware downloads start from it."""
    if not coaps_port:
        return None
    return public_uri or default_base_uri(coap_host, coaps_port, "coaps")


class Downloads:
    """Blocks of packages by token, from the two caches; counts what it served.

    `block_now` answers from memory alone (None: ask `block`, which may query), so the
    listener's transport can serve a block without a task or a query."""

    def __init__(self, tokens: TokenCache, chunks: ChunkCache,
                 layout: Callable[[UUID, UUID], Awaitable[tuple[int, int] | None]] | None = None) -> None:
        self.tokens = tokens
        self.chunks = chunks
        self.layout = layout
        self.blocks_served = 0
        self.bytes_served = 0
        self.downloads_finished = 0

    def block_now(self, token: str, number: int, size: int) -> Block | None:
        package = self.tokens.peek(token)
        if not package:
            return None
        start = number * size
        if start >= package.size:
            return None  # block() answers with the diagnostic
        seq, offset = divmod(start, package.chunk_size)
        chunk = self.chunks.peek((package.tenant_id, package.image_id, seq))
        if chunk is None:
            return None
        return self._served(package, number, size, chunk, offset)

    async def block(self, token: str, number: int, size: int) -> Block:
        """NotFound for a token that does not download (now) and ValidationFailed for a block
        beyond the end, each with what the device needs to know."""
        package = await self.tokens.get(token)
        if package is None:
            raise NotFound("no such package: the download token is unknown, expired or no longer valid")
        start = number * size
        if start >= package.size:
            raise ValidationFailed(f"block {number} of {size} bytes is beyond the end: the package has "
                                   f"{package.blocks(size)} blocks ({package.size} bytes)")
        seq, offset = divmod(start, package.chunk_size)
        chunk = await self.chunks.get((package.tenant_id, package.image_id, seq))
        if chunk is None:
            raise NotFound("the package's image is gone")
        return self._served(package, number, size, chunk, offset)

    def _served(self, package: Package, number: int, size: int, chunk: memoryview, offset: int) -> Block:
        start = number * size
        end = min(start + size, package.size)
        payload = chunk[offset:offset + end - start]
        more = end < package.size
        self.blocks_served += 1
        self.bytes_served += len(payload)
        if not more:
            self.downloads_finished += 1
        return Block(package, number, size, payload, more)

    async def image(self, tenant_id: UUID, image_id: UUID) -> ImageBytes:
        """A whole image of a city through the chunk cache (for a push); NotFound if it has none."""
        layout = await self.layout(tenant_id, image_id) if self.layout is not None else None
        if layout is None:
            raise NotFound(f"no firmware image {image_id}")
        size, chunk_size = layout
        parts = []
        for seq in range(-(-size // chunk_size)):
            chunk = await self.chunks.get((tenant_id, image_id, seq))
            if chunk is None:
                raise NotFound(f"firmware image {image_id} has no chunk {seq}")
            parts.append(chunk)
        return ImageBytes(parts, chunk_size, size)


class ImageBytes:
    """An image as the cached chunks it is made of, sliced without joining them: every push of
    it shares the one copy in the chunk cache, so memory stays flat in the devices pushed to at
    once (a joined 64 MiB image per push would not). A block never spans two chunks (chunks are
    multiples of 1024 bytes, blocks powers of two up to 1024), so a slice is one copy of a block."""

    __slots__ = ("chunks", "chunk_size", "size")

    def __init__(self, chunks: list[memoryview], chunk_size: int, size: int) -> None:
        self.chunks, self.chunk_size, self.size = chunks, chunk_size, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, part: slice) -> bytes:
        start, stop, _ = part.indices(self.size)
        pieces = []
        while start < stop:
            seq, offset = divmod(start, self.chunk_size)
            piece = self.chunks[seq][offset:offset + stop - start]
            pieces.append(piece)
            start += len(piece)
        return b"".join(pieces)

    def __bytes__(self) -> bytes:
        return self[:]


def downloads(db: Database, *, token_ttl_s: float = TOKEN_TTL_S,
              chunk_budget_bytes: int = CHUNK_BUDGET_BYTES) -> Downloads:
    """A node's Downloads over the database (system transactions: the token says which city)."""

    async def packages(hashes: list[bytes]) -> dict[bytes, Package]:
        async with db.system_tx() as conn:
            return await DeliveryRepository(conn).packages(hashes)

    async def chunk(tenant_id: UUID, image_id: UUID, seq: int) -> bytes | None:
        async with db.system_tx() as conn:
            return await DeliveryRepository(conn).chunk(tenant_id, image_id, seq)

    return Downloads(TokenCache(packages, ttl_s=token_ttl_s),
                     ChunkCache(chunk, budget_bytes=chunk_budget_bytes), layout=_layout(db))


def _layout(db: Database):
    async def layout(tenant_id: UUID, image_id: UUID) -> tuple[int, int] | None:
        async with db.system_tx() as conn:
            return await DeliveryRepository(conn).layout(tenant_id, image_id)
    return layout
