"""A node's memory of download tokens and image chunks: a block served is a slice, not a query."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from uuid import UUID

import structlog

from fleet.firmware.models import Package

log = structlog.get_logger("fleet.firmware")


def token_hash(token: str) -> bytes:
    """What the database keeps of a download token (the token itself travels only to the device)."""
    return hashlib.sha256(token.encode()).digest()

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
