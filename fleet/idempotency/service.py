"""Claiming an Idempotency-Key, keeping the response it got, and forgetting keys after a day.

The claim is its own short transaction, before the request runs: a concurrent duplicate then
finds the key `in_progress` and is told to retry (409), and never runs the request a second
time. The response is kept after the request's own transaction committed; a 5xx or a crash
releases the claim so that a retry runs the request again. A claim left `in_progress` by a node
that died between the request's commit and storing its response is taken over after
`stale_after` (a retry then runs the request again: the one case where a key cannot help).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from fleet.db import Database
from fleet.idempotency.models import Claim, Outcome, StoredResponse
from fleet.idempotency.repository import IdempotencyRepository

RETENTION = timedelta(hours=24)
STALE_AFTER = timedelta(minutes=5)
PRUNE_BATCH = 10_000


class IdempotencyService:
    def __init__(self, db: Database, *, stale_after: timedelta = STALE_AFTER) -> None:
        self.db = db
        self.stale_after = stale_after

    async def claim(self, tenant_id: UUID, api_key_id: UUID, key: str, method: str, path: str,
                    body_hash: bytes) -> Claim:
        async with self.db.tenant_tx(tenant_id) as conn:
            repo = IdempotencyRepository(conn)
            if await repo.claim(tenant_id, api_key_id, key, method, path, body_hash):
                return Claim(Outcome.CLAIMED)
            row = await repo.get(tenant_id, api_key_id, key)
            if row is None:  # pruned between the two statements: a day-old key is a new key
                return Claim(Outcome.CLAIMED) if await repo.claim(
                    tenant_id, api_key_id, key, method, path, body_hash) else Claim(Outcome.IN_PROGRESS)
            if (row["method"], row["path"], bytes(row["body_hash"])) != (method, path, body_hash):
                return Claim(Outcome.MISMATCH)
            if row["state"] == "in_progress":
                stale_before = datetime.now(UTC) - self.stale_after
                if await repo.take_over(tenant_id, api_key_id, key, stale_before):
                    return Claim(Outcome.CLAIMED)
                return Claim(Outcome.IN_PROGRESS)
            headers = [(name, value) for name, value in row["headers"]]
            return Claim(Outcome.REPLAY, StoredResponse(row["status"], headers, bytes(row["body"])))

    async def complete(self, tenant_id: UUID, api_key_id: UUID, key: str, response: StoredResponse) -> None:
        async with self.db.tenant_tx(tenant_id) as conn:
            await IdempotencyRepository(conn).complete(
                tenant_id, api_key_id, key, response.status, [list(h) for h in response.headers], response.body)

    async def release(self, tenant_id: UUID, api_key_id: UUID, key: str) -> None:
        async with self.db.tenant_tx(tenant_id) as conn:
            await IdempotencyRepository(conn).release(tenant_id, api_key_id, key)

    async def prune(self, now: datetime | None = None, *, batch: int = PRUNE_BATCH) -> int:
        """Forget keys older than a day, across cities (the scheduler's job, hourly): every one
        of them, a batch per short transaction, so a busy hour's keys never outgrow the job."""
        before = (now or datetime.now(UTC)) - RETENTION
        total = 0
        while True:
            async with self.db.system_tx() as conn:
                deleted = await IdempotencyRepository(conn).prune(before, batch)
            total += deleted
            if deleted < batch:
                return total
