"""The leader's pruning of the event log: events older than the retention are deleted in batches."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import structlog

from fleet.db import Database
from fleet.events.repository import EventRepository
from fleet.scheduling.leader import Leadership, NotLeader

log = structlog.get_logger(__name__)

RETENTION_DAYS = 7
INTERVAL_S = 3600.0
# Rows per delete, each its own short transaction: a backlog of millions never holds one
# transaction open long (which would hold every live event stream back, see EventRepository.after).
BATCH = 10_000
FAILED = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class EventRetention:
    def __init__(self, db: Database, *, retention_days: int = RETENTION_DAYS,
                 interval_s: float = INTERVAL_S, batch: int = BATCH) -> None:
        self.db = db
        self.retention = dt.timedelta(days=retention_days)
        self.interval_s = interval_s
        self.batch = batch
        self.pruned = 0  # events deleted by this node, for tests and logs

    @contextlib.asynccontextmanager
    async def lead(self, leadership: Leadership) -> AsyncIterator[None]:
        task = asyncio.create_task(self._every_interval(leadership))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every_interval(self, leadership: Leadership) -> None:
        while True:
            try:
                await self.prune(leadership)
            except NotLeader as exc:
                log.info("event pruning refused: no longer leader", reason=str(exc))
                return
            except FAILED as exc:
                log.info("event pruning interrupted; next run retries", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval_s)

    async def prune(self, leadership: Leadership) -> int:
        """Delete every event older than the retention, a batch per transaction."""
        cutoff = dt.datetime.now(dt.UTC) - self.retention
        total = 0
        while True:
            async with self.db.system_tx() as conn:
                await leadership.fence(conn)
                deleted = await EventRepository(conn).prune_before(cutoff, self.batch)
            total += deleted
            if deleted < self.batch:
                break
        self.pruned += total
        if total:
            log.info("old events pruned", events=total, before=cutoff.isoformat())
        return total
