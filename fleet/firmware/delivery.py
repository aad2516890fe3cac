"""Serving firmware packages to devices: one-time tokens, their packages, and the image bytes
cached per node so that a block is a slice of memory, not a query."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from uuid import UUID

import structlog

from fleet.db import Database
from fleet.errors import NotFound, ValidationFailed
from fleet.firmware.delivery_repository import DeliveryRepository
from fleet.firmware.models import Block, Package

log = structlog.get_logger("fleet.firmware")

# How long a node trusts what it read about a token. 10,000 devices fetching 128 blocks each
# would otherwise be 1.3 million queries; the price is that a token the campaign ended (abort,
# cancel, the device failed) keeps working on this node for at most this long.
TOKEN_TTL_S = 5.0
# A token still in use is looked up again this long before its entry runs out.
REFRESH_AHEAD_S = 1.0
# Tokens looked up in one query at most.
LOOKUP_BATCH = 1000
# Tokens remembered per node (valid and unknown alike), about 300 bytes each.
MAX_TOKENS = 200_000
# Image bytes kept per node: 64 MiB holds 256 chunks, hundreds of 128 KiB packages or one
# image of the largest size a city may upload.
CHUNK_BUDGET_BYTES = 64 * 1024 * 1024
# The block a request without Block2 gets (RFC 7959 §2.2: the server's choice), the largest.
DEFAULT_BLOCK_SIZE = 1024
_TOKEN_BYTES = 18  # 144 bits: 24 URL-safe characters, no padding


def new_token() -> tuple[str, bytes]:
    """A one-time download token for a Package URI and the SHA-256 stored in its row."""
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    return token, token_hash(token)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def package_uri(base_uri: str, token: str) -> str:
    return f"{base_uri.rstrip('/')}/fw/{token}"


def default_base_uri(coap_host: str, coap_port: int) -> str:
    """Where devices reach this node's listener when no FLEET_FIRMWARE_DOWNLOAD_URI says."""
    host = "127.0.0.1" if coap_host in ("::", "0.0.0.0", "") else coap_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"coap://{host}:{coap_port}"


class TokenCache:
    """Token -> Package (or None: unknown, expired, no longer downloading), for TOKEN_TTL_S.

    Lookups are batched: tokens missed while a lookup is under way are looked up together in
    the next one (a wave of a campaign starting is thousands of first blocks at once), and
    concurrent misses for one token share its lookup."""

    def __init__(self, lookup: Callable[[list[bytes]], Awaitable[dict[bytes, Package]]], *,
                 ttl_s: float = TOKEN_TTL_S, max_tokens: int = MAX_TOKENS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lookup = lookup
        self.ttl_s = ttl_s
        self.max_tokens = max_tokens
        self.clock = clock
        self._known: dict[str, tuple[float, Package | None]] = {}
        self._next_sweep = clock() + ttl_s
        self._pending: dict[str, asyncio.Future] = {}
        self._queued: list[str] = []
        self._batch: asyncio.Task | None = None
        self.lookups = 0

    def peek(self, token: str) -> Package | None | bool:
        """The cached answer, or False when this node does not know (or no longer trusts) it.

        A valid token in its last REFRESH_AHEAD_S is looked up again in the background, so a
        device downloading for minutes is served from memory throughout, and a token ended
        meanwhile still stops working within the TTL."""
        entry = self._known.get(token)
        if entry is None:
            return False
        until, package = entry
        now = self.clock()
        if until <= now:
            return False
        if package is not None and until - now < REFRESH_AHEAD_S and token not in self._pending:
            self._ask(token)
        return package

    async def get(self, token: str) -> Package | None:
        known = self.peek(token)
        if known is not False:
            return known
        return await asyncio.shield(self._ask(token))

    def _ask(self, token: str) -> asyncio.Future:
        pending = self._pending.get(token)
        if pending is None:
            pending = self._pending[token] = asyncio.get_running_loop().create_future()
            pending.add_done_callback(_looked_up)
            self._queued.append(token)
            if self._batch is None:
                self._batch = asyncio.ensure_future(self._look_up_queued())
        return pending

    async def _look_up_queued(self) -> None:
        try:
            while self._queued:
                tokens, self._queued = self._queued[:LOOKUP_BATCH], self._queued[LOOKUP_BATCH:]
                hashes = [token_hash(token) for token in tokens]
                try:
                    self.lookups += 1
                    found = await self.lookup(hashes)
                except BaseException as exc:
                    for token in tokens:
                        pending = self._pending.pop(token)
                        if isinstance(exc, asyncio.CancelledError):
                            pending.cancel()
                        else:
                            pending.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                now, wall = self.clock(), datetime.now(UTC)
                for token, hashed in zip(tokens, hashes, strict=True):
                    package = found.get(hashed)
                    ttl = self.ttl_s if package is None else min(
                        self.ttl_s, (package.expires_at - wall).total_seconds())
                    self._remember(token, now + ttl, package)
                    self._pending.pop(token).set_result(package)
        finally:
            self._batch = None

    def _remember(self, token: str, until: float, package: Package | None) -> None:
        known = self._known
        now = self.clock()
        if now >= self._next_sweep or len(known) >= self.max_tokens:
            # Once a TTL: the tokens run out go, so memory follows the downloads under way, not
            # every token this node ever served (a campaign is one per device).
            self._next_sweep = now + self.ttl_s
            for stale in [t for t, (u, _) in known.items() if u <= now]:
                del known[stale]
            while len(known) >= self.max_tokens:  # all fresh: forget the oldest
                del known[next(iter(known))]
        known.pop(token, None)
        known[token] = (until, package)


def _looked_up(lookup: asyncio.Future) -> None:
    """A lookup that failed (the database away) fails its waiters; a background refresh had
    none, and leaves the entry to run out."""
    if not lookup.cancelled() and lookup.exception() is not None:
        log.debug("looking up a download token failed", error=repr(lookup.exception()))


ChunkKey = tuple[UUID, UUID, int]  # tenant, image, chunk number


class ChunkCache:
    """Image chunks in memory up to a byte budget, least recently used first out.

    Concurrent misses for one chunk share one query; a chunk larger than the whole budget is
    served but not kept."""

    def __init__(self, load: Callable[[UUID, UUID, int], Awaitable[bytes | None]], *,
                 budget_bytes: int = CHUNK_BUDGET_BYTES) -> None:
        self.load = load
        self.budget_bytes = budget_bytes
        self.held_bytes = 0
        self._chunks: collections.OrderedDict[ChunkKey, memoryview] = collections.OrderedDict()
        self._pending: dict[ChunkKey, asyncio.Future] = {}
        self.loads = 0

    def peek(self, key: ChunkKey) -> memoryview | None:
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
        return chunk

    async def get(self, key: ChunkKey) -> memoryview | None:
        chunk = self.peek(key)
        if chunk is not None:
            return chunk
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._load(key))
        return await asyncio.shield(pending)

    async def _load(self, key: ChunkKey) -> memoryview | None:
        try:
            data = await self.load(*key)
        finally:
            self._pending.pop(key, None)
        self.loads += 1
        if data is None:
            return None
        chunk = memoryview(data)
        self._keep(key, chunk)
        return chunk

    def _keep(self, key: ChunkKey, chunk: memoryview) -> None:
        if len(chunk) > self.budget_bytes:
            return
        chunks = self._chunks
        while chunks and self.held_bytes + len(chunk) > self.budget_bytes:
            _, evicted = chunks.popitem(last=False)
            self.held_bytes -= len(evicted)
        chunks[key] = chunk
        self.held_bytes += len(chunk)


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

    async def image(self, tenant_id: UUID, image_id: UUID) -> bytes:
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
        return b"".join(parts)


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
