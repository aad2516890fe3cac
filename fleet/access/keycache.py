"""A node's memory of recently checked API keys: live ones briefly, unknown ones a little longer.

A lookup notes the cache's generation before it asks the database and may only store what it
found if no revocation arrived meanwhile: a lookup that read a key just before its revocation
committed must not put it back for another `ttl_s`.
"""

from __future__ import annotations

from uuid import UUID

from fleet.access.models import Principal


class KeyCache:
    def __init__(self, *, ttl_s: float = 5.0, unknown_ttl_s: float = 30.0,
                 max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.unknown_ttl_s = unknown_ttl_s
        self.max_entries = max_entries
        self.generation = 0
        # False while revocations from other nodes could go unheard (see revocations.py).
        self.accepting = True
        self._live: dict[bytes, tuple[Principal, float]] = {}
        # Hashes the database did not know (wrong, made-up or revoked keys) -> until when.
        self._unknown: dict[bytes, float] = {}

    def live(self, key_hash: bytes, now: float) -> Principal | None:
        cached = self._live.get(key_hash)
        if cached is None:
            return None
        if cached[1] <= now:
            del self._live[key_hash]
            return None
        return cached[0]

    def unknown(self, key_hash: bytes, now: float) -> bool:
        until = self._unknown.get(key_hash)
        if until is None:
            return False
        if until <= now:
            del self._unknown[key_hash]
            return False
        return True

    def remember_live(self, key_hash: bytes, principal: Principal, generation: int, now: float) -> None:
        if generation != self.generation or not self.accepting:
            return  # a revocation arrived while this lookup was under way: what it read may be stale
        _bounded_put(self._live, key_hash, (principal, now + self.ttl_s), self.max_entries)

    def remember_unknown(self, key_hash: bytes, now: float) -> None:
        # A key is revoked for ever and a made-up one never becomes valid, so no generation check.
        _bounded_put(self._unknown, key_hash, now + self.unknown_ttl_s, self.max_entries)

    def forget_key(self, key_id: UUID) -> None:
        self.generation += 1
        for key_hash, (principal, _) in list(self._live.items()):
            if principal.api_key_id == key_id:
                del self._live[key_hash]

    def clear(self) -> None:
        self.generation += 1
        self._live.clear()


def _bounded_put(entries: dict, key: bytes, value: object, max_entries: int) -> None:
    entries.pop(key, None)
    if len(entries) >= max_entries:
        # Oldest first: a flood of distinct keys evicts itself, not memory.
        del entries[next(iter(entries))]
    entries[key] = value
