"""Token buckets and the key cache's rules, as pure logic."""

from __future__ import annotations

import uuid

from fleet.access.keycache import KeyCache
from fleet.access.limits import Rate, RequestLimits, TokenBuckets
from fleet.access.models import Principal, Role


def test_a_bucket_grants_its_burst_then_says_how_long_to_wait():
    buckets = TokenBuckets(Rate(per_s=2.0, burst=3))
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == 0.5
    assert buckets.take("b", 0.0) == 0.0  # another caller has its own bucket
    assert buckets.take("a", 0.5) == 0.0  # refilled by half a second at 2/s
    assert buckets.take("a", 100.0) == 0.0 and buckets._buckets["a"][0] == 2.0  # never above burst


def test_buckets_are_bounded_and_drop_the_least_recently_seen():
    buckets = TokenBuckets(Rate(per_s=1.0, burst=1), max_callers=3)
    for caller in ("a", "b", "c"):
        buckets.take(caller, 0.0)
    buckets.take("a", 0.0)  # seen again: now the most recent
    buckets.take("d", 0.0)
    assert len(buckets) == 3 and set(buckets._buckets) == {"a", "c", "d"}


def test_a_zero_rate_is_no_limit():
    buckets = TokenBuckets(Rate(per_s=0, burst=0))
    assert all(buckets.take("a", 0.0) == 0.0 for _ in range(1000)) and len(buckets) == 0


def test_an_address_that_spent_its_failures_waits_before_any_key_is_looked_up():
    limits = RequestLimits(per_address=Rate(100, 100), per_key=Rate(100, 100),
                           failures_per_address=Rate(0.5, 2))
    for _ in range(2):
        assert limits.failing("10.0.0.1", 0.0) == 0.0
        limits.authentication_failed("10.0.0.1", 0.0)
    assert limits.failing("10.0.0.1", 0.0) == 2.0
    assert limits.failing("10.0.0.2", 0.0) == 0.0
    assert limits.failing("10.0.0.1", 2.0) == 0.0


def _principal(key_id: uuid.UUID) -> Principal:
    return Principal(uuid.uuid4(), "seoul", "Asia/Seoul", Role.ADMIN, key_id)


def test_a_lookup_that_began_before_a_revocation_cannot_cache_the_key():
    cache = KeyCache(ttl_s=5.0)
    key_id = uuid.uuid4()
    generation = cache.generation  # the lookup starts and reads the key as live ...
    cache.forget_key(key_id)  # ... the revocation commits meanwhile ...
    cache.remember_live(b"h", _principal(key_id), generation, 0.0)  # ... and the lookup ends
    assert cache.live(b"h", 0.0) is None
    cache.remember_live(b"h", _principal(key_id), cache.generation, 0.0)
    assert cache.live(b"h", 0.0) is not None and cache.live(b"h", 5.0) is None


def test_nothing_is_cached_while_revocations_could_go_unheard():
    cache = KeyCache()
    cache.accepting = False
    cache.remember_live(b"h", _principal(uuid.uuid4()), cache.generation, 0.0)
    assert cache.live(b"h", 0.0) is None


def test_unknown_keys_are_remembered_for_a_while_and_bounded():
    cache = KeyCache(unknown_ttl_s=30.0, max_entries=2)
    cache.remember_unknown(b"x", 0.0)
    assert cache.unknown(b"x", 29.0) and not cache.unknown(b"x", 30.0)
    for key in (b"a", b"b", b"c"):
        cache.remember_unknown(key, 0.0)
    assert not cache.unknown(b"a", 1.0) and cache.unknown(b"c", 1.0)
