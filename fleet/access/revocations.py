"""Hearing of key revocations from every node (LISTEN `fleet_keys`) and forgetting those keys at once."""

from __future__ import annotations

import asyncio
from uuid import UUID

from fleet.access.keycache import KeyCache
from fleet.access.repository import REVOCATION_CHANNEL
from fleet.db import Database
from fleet.db.listening import ChannelFollower

RETRY_S = 1.0
# A connection can die without the socket saying so (a dropped NAT entry, a failover): a
# round trip this often finds out, and until it does the cache is still bounded by its TTL.
PING_S = 15.0


class RevocationListener:
    """Keeps one connection listening; while it is not, the cache stores nothing.

    Whatever was cached before listening began, or while the connection was lost, may hide a
    revocation whose notification nobody heard, so each (re)connection starts from an empty cache.
    """

    def __init__(self, db: Database, cache: KeyCache, *, retry_s: float = RETRY_S,
                 ping_s: float = PING_S) -> None:
        self.cache = cache
        self.listening = asyncio.Event()
        self.follower = ChannelFollower(
            db.pool, REVOCATION_CHANNEL, self._revoked, on_listening=self._listening,
            application_name="fleet-keys",
            lost_message="not listening for key revocations; keys are checked on every request",
            check_s=ping_s, retry_s=retry_s)
        cache.accepting = False

    @property
    def backend_pid(self) -> int | None:
        return self.follower.backend_pid

    async def run(self) -> None:
        await self.follower.run()

    def _listening(self, now: bool) -> None:
        self.cache.clear()
        self.cache.accepting = now
        if now:
            self.listening.set()
        else:
            self.listening.clear()

    def _revoked(self, payload: str) -> None:
        try:
            key_id = UUID(payload)
        except ValueError:
            self.cache.clear()  # not ours to parse: forgetting everything is always safe
            return
        self.cache.forget_key(key_id)
