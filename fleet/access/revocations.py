"""Hearing of key revocations from every node (LISTEN `fleet_keys`) and forgetting those keys at once."""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

import asyncpg
import structlog

from fleet.access.keycache import KeyCache
from fleet.access.repository import REVOCATION_CHANNEL
from fleet.db import Database

log = structlog.get_logger("fleet.access")

RETRY_S = 1.0
# A connection can die without the socket saying so (a dropped NAT entry, a failover): a
# round trip this often finds out, and until it does the cache is still bounded by its TTL.
PING_S = 15.0
CLOSING_CHECK_S = 1.0


class RevocationListener:
    """Keeps one connection listening; while it is not, the cache stores nothing.

    Whatever was cached before listening began, or while the connection was lost, may hide a
    revocation whose notification nobody heard, so each (re)connection starts from an empty cache.
    """

    def __init__(self, db: Database, cache: KeyCache, *, retry_s: float = RETRY_S,
                 ping_s: float = PING_S) -> None:
        self.db = db
        self.cache = cache
        self.retry_s = retry_s
        self.ping_s = ping_s
        self.listening = asyncio.Event()
        self.backend_pid: int | None = None  # of the listening connection, while there is one
        self._failing = False
        cache.accepting = False

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, TimeoutError) as exc:
                if not self._failing and not self.db.pool.is_closing():  # once per change of state
                    log.warning("not listening for key revocations; keys are checked on every request",
                                error=type(exc).__name__)
                self._failing = True
            await asyncio.sleep(self.retry_s)

    async def _listen(self) -> None:
        lost = asyncio.Event()
        async with self.db.pool.acquire() as conn:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(REVOCATION_CHANNEL, self._revoked)
            self.cache.clear()
            self.cache.accepting = True
            self.backend_pid = conn.get_server_pid()
            self.listening.set()
            if self._failing:
                log.info("listening for key revocations again")
                self._failing = False
            else:
                log.debug("listening for key revocations")
            try:
                since_ping = 0.0
                # The pool waits for this connection when it closes: look every second.
                while not lost.is_set() and not self.db.pool.is_closing():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), CLOSING_CHECK_S)
                    since_ping += CLOSING_CHECK_S
                    if since_ping >= self.ping_s and not lost.is_set():
                        await conn.fetchval("select 1")
                        since_ping = 0.0
            finally:
                self.listening.clear()
                self.backend_pid = None
                self.cache.accepting = False
                self.cache.clear()
                with contextlib.suppress(Exception):
                    await conn.remove_listener(REVOCATION_CHANNEL, self._revoked)
        raise OSError("the connection listening for key revocations was lost")

    def _revoked(self, _conn, _pid, _channel, payload: str) -> None:
        try:
            key_id = UUID(payload)
        except ValueError:
            self.cache.clear()  # not ours to parse: forgetting everything is always safe
            return
        self.cache.forget_key(key_id)
