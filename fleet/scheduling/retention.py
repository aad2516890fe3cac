"""The leader's pruning of the event log: events older than the retention are deleted in batches."""

from __future__ import annotations

import datetime as dt

import structlog

from fleet.db import Database
from fleet.events.repository import EventRepository
from fleet.scheduling.leader import Leadership, every

log = structlog.get_logger(__name__)

RETENTION_DAYS = 7
INTERVAL_S = 3600.0
# Rows per delete, each its own short transaction: a backlog of millions never holds one
# transaction open long (which would hold every live event stream back, see EventRepository.after).
BATCH = 10_000


class EventRetention:
    def __init__(self, db: Database, *, retention_days: int = RETENTION_DAYS,
                 interval_s: float = INTERVAL_S, batch: int = BATCH) -> None:
        self.db = db
        self.retention = dt.timedelta(days=retention_days)
        self.interval_s = interval_s
        self.batch = batch
        self.pruned = 0  # events deleted by this node, for tests and logs
        self.lead = every(interval_s, self.prune, "event-retention")

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
