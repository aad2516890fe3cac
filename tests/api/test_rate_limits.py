"""Rate limits over real HTTP: per key, per client address, and failed authentications per address."""

from __future__ import annotations

import httpx

from fleet.access.service import ApiKeyService
from fleet.settings import HttpSettings, RateLimitSettings
from tests.conftest import make_city, serve_api
from tests.scheduling.conftest import eventually

CHEAP = "/api/v1/tenant"


def _assert_too_many(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"


async def test_a_key_over_its_rate_gets_429_with_retry_after(db):
    seoul, busan = await make_city(db, "seoul"), await make_city(db, "busan")
    limits = RateLimitSettings(key_per_s=0.01, key_burst=3, address_per_s=0, address_burst=0)
    async with serve_api(db, HttpSettings(limits=limits)) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {seoul.key}"}) as chatty, \
                httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {busan.key}"}) as other:
            assert [(await chatty.get(CHEAP)).status_code for _ in range(3)] == [200, 200, 200]
            _assert_too_many(await chatty.get(CHEAP))
            # Another key from the same address is not held back by this one.
            assert (await other.get(CHEAP)).status_code == 200
            assert (await chatty.get("/healthz")).status_code == 200


async def test_an_address_over_its_rate_gets_429(db):
    seoul = await make_city(db, "seoul")
    limits = RateLimitSettings(key_per_s=0, key_burst=0, address_per_s=0.01, address_burst=2)
    async with serve_api(db, HttpSettings(limits=limits)) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {seoul.key}"}) as client:
            assert [(await client.get(CHEAP)).status_code for _ in range(2)] == [200, 200]
            _assert_too_many(await client.get(CHEAP))
            _assert_too_many(await client.get("/api/v1/devices", headers={"Authorization": "Bearer nope"}))


async def test_failed_authentications_hold_back_an_address_but_not_the_keys_it_already_used(db):
    seoul = await make_city(db, "seoul")
    limits = RateLimitSettings(key_per_s=0, key_burst=0, address_per_s=0, address_burst=0,
                               auth_failures_per_s=0.01, auth_failures_burst=3)
    # Cached for an hour: on a loaded machine the default 5 s could lapse within the test.
    keys = ApiKeyService(db, cache_s=3600)
    async with serve_api(db, HttpSettings(limits=limits), extra_services={"apikey_service": keys}) as url:
        await eventually(lambda: keys.cache.accepting)  # caching starts once revocations are heard
        async with httpx.AsyncClient(base_url=url) as client:
            good = {"Authorization": f"Bearer {seoul.key}"}
            assert (await client.get(CHEAP, headers=good)).status_code == 200
            guesses = [(await client.get(CHEAP, headers={"Authorization": f"Bearer fleet_0000_{n}"})).status_code
                       for n in range(3)]
            assert guesses == [401, 401, 401]
            _assert_too_many(await client.get(CHEAP, headers={"Authorization": "Bearer fleet_0000_more"}))
            # The key this node checked a moment ago still works from the same address.
            assert (await client.get(CHEAP, headers=good)).status_code == 200
