"""Token buckets per caller (a key, a client address, a CoAP peer): O(1) per request, bounded memory."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_s` tokens a second, up to `burst` saved; `per_s` 0 turns the limit off."""

    per_s: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.per_s > 0


class TokenBuckets:
    """One bucket per caller, created full on first sight.

    At most `max_callers` buckets are kept; past that the least recently seen is dropped. A
    dropped caller comes back with a full bucket, which is no more than a caller idle long
    enough to refill would have, so a flood of spoofed sources can cost precision, not memory.
    """

    def __init__(self, rate: Rate, *, max_callers: int = 100_000) -> None:
        self.rate = rate
        self.max_callers = max_callers
        # caller -> [tokens, time of the last refill]; dict order is least recently seen first.
        self._buckets: dict[Hashable, list[float]] = {}

    def take(self, caller: Hashable, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; 0.0 if granted, else the seconds until they would be there."""
        if not self.rate.enabled:
            return 0.0
        buckets = self._buckets
        bucket = buckets.pop(caller, None)
        if bucket is None:
            bucket = [float(self.rate.burst), now]
            if len(buckets) >= self.max_callers:
                del buckets[next(iter(buckets))]
        else:
            bucket[0] = min(float(self.rate.burst), bucket[0] + (now - bucket[1]) * self.rate.per_s)
            bucket[1] = now
        buckets[caller] = bucket  # re-inserted: most recently seen last
        if bucket[0] >= cost:
            bucket[0] -= cost
            return 0.0
        return (cost - bucket[0]) / self.rate.per_s

    def exhausted(self, caller: Hashable, now: float) -> float:
        """Seconds until `caller` has a token again, without taking one (0.0: it has one)."""
        bucket = self._buckets.get(caller)
        if bucket is None or not self.rate.enabled:
            return 0.0
        tokens = min(float(self.rate.burst), bucket[0] + (now - bucket[1]) * self.rate.per_s)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate.per_s

    def __len__(self) -> int:
        return len(self._buckets)


class RequestLimits:
    """The REST API's limits: requests per client address and per key, failed keys per address."""

    def __init__(self, *, per_address: Rate, per_key: Rate, failures_per_address: Rate) -> None:
        self.per_address = TokenBuckets(per_address)
        self.per_key = TokenBuckets(per_key)
        self.failures = TokenBuckets(failures_per_address)

    def for_address(self, address: str, now: float) -> float:
        """Seconds to wait, or 0.0."""
        return self.per_address.take(address, now)

    def failing(self, address: str, now: float) -> float:
        """Seconds until an address that spent its failed authentications may have a key
        looked up in the database again (0.0: it may now)."""
        return self.failures.exhausted(address, now)

    def authentication_failed(self, address: str, now: float) -> None:
        self.failures.take(address, now)

    def for_key(self, key_id: Hashable, now: float) -> float:
        return self.per_key.take(key_id, now)
