"""Idempotency-Key over real HTTP: a retried POST never creates two, whatever the timing."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta

from fleet.idempotency.models import Outcome
from fleet.idempotency.service import IdempotencyService
from tests.api.workorder_helpers import WORKORDERS

ORDER = {"type": "other", "priority": "low", "location": {"lat": 37.5, "lon": 127.0}, "notes": "bench broken"}


async def count_orders(city) -> int:
    return len((await city.client.get(WORKORDERS)).json()["items"])


async def test_a_retry_gets_the_first_response_replayed(seoul):
    headers = {"Idempotency-Key": "tablet-7f3a-0001"}
    first = await seoul.client.post(WORKORDERS, json=ORDER, headers=headers)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = await seoul.client.post(WORKORDERS, json=ORDER, headers=headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() and again.headers["etag"] == first.headers["etag"]
    assert again.headers["content-type"] == first.headers["content-type"]
    assert await count_orders(seoul) == 1

    other = await seoul.client.post(WORKORDERS, json={**ORDER, "notes": "another bench"}, headers=headers)
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    assert other.headers["content-type"].startswith("application/problem+json")
    # Without a key every POST is its own.
    await seoul.client.post(WORKORDERS, json=ORDER)
    assert await count_orders(seoul) == 2
    bad = await seoul.client.post(WORKORDERS, json=ORDER, headers={"Idempotency-Key": "a b"})
    assert bad.status_code == 400


async def test_a_refusal_is_kept_too_and_keys_are_per_api_key(seoul, busan):
    headers = {"Idempotency-Key": "k1"}
    refused = await seoul.client.post(WORKORDERS, json={**ORDER, "priority": "someday"}, headers=headers)
    assert refused.status_code == 400
    replayed = await seoul.client.post(WORKORDERS, json={**ORDER, "priority": "someday"}, headers=headers)
    assert replayed.status_code == 400 and replayed.headers["idempotent-replayed"] == "true"
    theirs = await busan.client.post(WORKORDERS, json=ORDER, headers=headers)
    assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers


async def test_concurrent_duplicates_create_one(db, seoul):
    headers = {"Idempotency-Key": "flaky-network"}
    responses = await asyncio.gather(*(seoul.client.post(WORKORDERS, json=ORDER, headers=headers)
                                       for _ in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}, statuses
    assert len({r.json()["id"] for r in responses if r.status_code == 201}) == 1
    for response in responses:
        if response.status_code == 409:
            assert response.headers["retry-after"] == "1"
    assert await count_orders(seoul) == 1

    # A claim still running (held here) answers 409 to the duplicate.
    service = IdempotencyService(db)
    body = json.dumps(ORDER).encode()
    claim = await service.claim(seoul.tenant_id, seoul.principal.api_key_id, "held", "POST", WORKORDERS,
                                hashlib.sha256(body).digest())
    assert claim.outcome is Outcome.CLAIMED
    busy = await seoul.client.post(WORKORDERS, content=body, headers={
        "Idempotency-Key": "held", "Content-Type": "application/json"})
    assert busy.status_code == 409 and "in progress" in busy.json()["detail"]
    assert await count_orders(seoul) == 1


async def test_keys_are_forgotten_after_a_day(db, seoul):
    await seoul.client.post(WORKORDERS, json=ORDER, headers={"Idempotency-Key": "old"})
    service = IdempotencyService(db)
    assert await service.prune(datetime.now(UTC)) == 0
    assert await service.prune(datetime.now(UTC) + timedelta(hours=25)) == 1
    fresh = await seoul.client.post(WORKORDERS, json=ORDER, headers={"Idempotency-Key": "old"})
    assert fresh.status_code == 201 and "idempotent-replayed" not in fresh.headers


async def test_pruning_forgets_every_old_key_however_many_batches_it_takes(db, seoul):
    service = IdempotencyService(db)
    for n in range(5):
        claim = await service.claim(seoul.tenant_id, seoul.principal.api_key_id, f"k{n}", "POST", WORKORDERS,
                                    b"x" * 32)
        assert claim.outcome is Outcome.CLAIMED
    assert await service.prune(datetime.now(UTC) + timedelta(hours=25), batch=2) == 5
    assert await service.prune(datetime.now(UTC) + timedelta(hours=25), batch=2) == 0
