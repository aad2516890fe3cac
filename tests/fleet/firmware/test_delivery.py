"""The pure parts of firmware delivery: tokens, URIs, and the per-node caches."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from fleet.errors import NotFound, ValidationFailed
from fleet.firmware.caches import ChunkCache, TokenCache
from fleet.firmware.delivery import (Downloads, ImageBytes, default_base_uri, new_token, package_uri,
                                     without_token)
from fleet.firmware.models import Package

TENANT, IMAGE = uuid.uuid4(), uuid.uuid4()


def test_token_is_url_safe_random_and_hashed():
    token, hashed = new_token()
    assert re.fullmatch(r"[A-Za-z0-9_-]{24,}", token)  # 144 bits
    assert hashed == hashlib.sha256(token.encode()).digest()
    assert new_token()[0] != token


@pytest.mark.parametrize(("host", "base"), [
    ("::", "coap://127.0.0.1:5683"), ("0.0.0.0", "coap://127.0.0.1:5683"),
    ("10.0.0.5", "coap://10.0.0.5:5683"), ("fd00::5", "coap://[fd00::5]:5683"),
    ("lights.example.org", "coap://lights.example.org:5683")])
def test_default_base_uri(host, base):
    assert default_base_uri(host, 5683) == base


def test_package_uri():
    assert package_uri("coap://fleet.example:5683", "abc") == "coap://fleet.example:5683/fw/abc"
    assert package_uri("coap://fleet.example:5683/", "abc") == "coap://fleet.example:5683/fw/abc"


def package(size: int = 5000, chunk_size: int = 1024, expires_in: float = 3600) -> Package:
    return Package(TENANT, IMAGE, size, bytes(range(32)), datetime.now(UTC) + timedelta(seconds=expires_in),
                   chunk_size)


async def test_chunk_cache_evicts_least_recently_used_within_budget():
    loads = []

    async def load(tenant, image, seq):
        loads.append(seq)
        return bytes([seq]) * 100

    cache = ChunkCache(load, budget_bytes=250)
    for seq in (0, 1):
        await cache.get((TENANT, IMAGE, seq))
    cache.peek((TENANT, IMAGE, 0))  # 0 is now the more recently used
    await cache.get((TENANT, IMAGE, 2))
    assert cache.held_bytes == 200
    assert cache.peek((TENANT, IMAGE, 1)) is None and cache.peek((TENANT, IMAGE, 0)) is not None
    assert loads == [0, 1, 2]


async def test_chunk_larger_than_budget_is_served_not_kept():
    async def load(tenant, image, seq):
        return b"x" * 500

    cache = ChunkCache(load, budget_bytes=100)
    assert len(await cache.get((TENANT, IMAGE, 0))) == 500
    assert cache.held_bytes == 0


async def test_concurrent_misses_share_one_load():
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def load(tenant, image, seq):
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return b"chunk"

    cache = ChunkCache(load)
    waiting = [asyncio.create_task(cache.get((TENANT, IMAGE, 0))) for _ in range(50)]
    await started.wait()
    release.set()
    assert {bytes(c) for c in await asyncio.gather(*waiting)} == {b"chunk"}
    assert calls == 1


async def test_token_cache_remembers_for_its_ttl_unknown_tokens_too():
    now = [0.0]
    lookups = []

    async def lookup(hashes):
        lookups.append(hashes)
        return {hashes[0]: package()} if len(lookups) == 1 else {}

    cache = TokenCache(lookup, ttl_s=5, clock=lambda: now[0])
    assert cache.peek("t") is False
    assert (await cache.get("t")).size == 5000
    assert cache.peek("t").size == 5000
    now[0] = 5.1  # past the TTL: asked again, and the campaign has ended it meanwhile
    assert cache.peek("t") is False and await cache.get("t") is None
    assert cache.peek("t") is None and len(lookups) == 2


async def test_token_cache_is_bounded():
    async def lookup(hashes):
        return {}

    cache = TokenCache(lookup, max_tokens=3)
    for n in range(10):
        await cache.get(str(n))
    assert len(cache._known) == 3 and cache.peek("9") is None


async def test_token_cache_lets_run_out_tokens_go():
    """Memory follows the downloads under way, not every token ever served."""
    now = [0.0]

    async def lookup(hashes):
        return {h: package() for h in hashes}

    cache = TokenCache(lookup, ttl_s=5, clock=lambda: now[0])
    for n in range(100):
        await cache.get(f"old-{n}")
    now[0] = 6.0  # all of them run out; the next one remembered sweeps them
    await cache.get("new")
    assert list(cache._known) == ["new"]


async def test_downloads_slices_blocks_and_counts():
    content = bytes(range(256)) * 20  # 5120 bytes in 1024-byte chunks

    async def lookup(hashes):
        return {h: package(size=5000) for h in hashes}

    async def load(tenant, image, seq):
        return content[seq * 1024:(seq + 1) * 1024]

    downloads = Downloads(TokenCache(lookup), ChunkCache(load))
    assert downloads.block_now("t", 0, 64) is None  # nothing in memory yet
    first = await downloads.block("t", 0, 64)
    assert bytes(first.payload) == content[:64] and first.more
    assert downloads.block_now("t", 17, 64) is None  # chunk 1 not loaded yet
    await downloads.block("t", 16, 64)
    middle = downloads.block_now("t", 17, 64)  # now from memory alone
    assert bytes(middle.payload) == content[17 * 64:18 * 64] and middle.more
    last = await downloads.block("t", 4, 1024)
    assert bytes(last.payload) == content[4096:5000] and not last.more
    assert downloads.downloads_finished == 1 and downloads.bytes_served >= 64 + 904
    with pytest.raises(ValidationFailed, match="beyond the end"):
        await downloads.block("t", 5, 1024)


async def test_unknown_token_is_not_found():
    async def lookup(hashes):
        return {}

    async def load(tenant, image, seq):
        raise AssertionError("no chunk for an unknown token")

    with pytest.raises(NotFound):
        await Downloads(TokenCache(lookup), ChunkCache(load)).block("nope", 0, 1024)


async def test_token_in_use_is_refreshed_before_it_runs_out():
    now = [0.0]
    answers = [package(), None]

    async def lookup(hashes):
        answer = answers.pop(0)
        return {hashes[0]: answer} if answer else {}

    cache = TokenCache(lookup, ttl_s=5, clock=lambda: now[0])
    await cache.get("t")
    now[0] = 4.5  # in its last second: served, and looked up again meanwhile
    assert cache.peek("t").size == 5000
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert cache.peek("t") is None  # the campaign ended it: refused before the TTL ran out
    assert answers == []


async def test_token_misses_are_looked_up_together():
    batches = []

    async def lookup(hashes):
        batches.append(len(hashes))
        await asyncio.sleep(0.01)
        return {}

    cache = TokenCache(lookup)
    await asyncio.gather(*(cache.get(f"t{n % 40}") for n in range(100)))
    assert sum(batches) == 40 and len(batches) <= 2  # the first alone, the rest together


async def test_failed_lookup_fails_its_waiters_and_is_not_remembered():
    async def lookup(hashes):
        raise ConnectionError("database away")

    cache = TokenCache(lookup)
    with pytest.raises(ConnectionError):
        await cache.get("t")
    assert cache.peek("t") is False


def test_a_package_uri_is_stored_and_shown_without_its_token():
    uri = package_uri("coap://[2001:db8::1]:5683", "abcDEF-_123")
    assert without_token("/5/0/1", uri) == "coap://[2001:db8::1]:5683/fw/<token>"
    assert without_token("/5/0/1", uri + "?x=1") == "coap://[2001:db8::1]:5683/fw/<token>?x=1"
    assert without_token("/5/0/1", "coap://vendor.example/images/7.bin") == "coap://vendor.example/images/7.bin"
    assert without_token("/3/0/14", uri) == uri and without_token("/5/0/1", 7) == 7


def test_an_image_is_sliced_from_its_chunks_without_joining_them():
    content = bytes(range(256)) * 20  # 5120 bytes: chunks of 2048, 2048 and 1024
    chunks = [memoryview(content[o:o + 2048]) for o in range(0, len(content), 2048)]
    image = ImageBytes(chunks, 2048, len(content))
    assert len(image) == 5120 and bytes(image) == content
    for start, stop in ((0, 1024), (1024, 2048), (2048, 3072), (4096, 9999), (2000, 2100), (5000, 5120), (5120, 6000)):
        assert image[start:stop] == content[start:stop]
