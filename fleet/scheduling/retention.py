"""The leader's pruning of what is kept only for a while: the event log (older than the
retention, in batches) and browser sessions long over."""

from __future__ import annotations

import datetime as dt

import structlog

from fleet.access.repository import SessionRepository
from fleet.db import Database
from fleet.events.repository import EventRepository
from fleet.scheduling.leader import Leadership, every

log = structlog.get_logger(__name__)

RETENTION_DAYS = 7
INTERVAL_S = 3600.0
# Rows per delete, each its own short transaction: a backlog of millions never holds one
# transaction open long (which would hold every live event stream back, see EventRepository.after).
BATCH = 10_000
# An ended or expired session is kept this long, for the audit of who was signed in when.
SESSION_KEEP_DAYS = 30


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


class SessionRetention:
    def __init__(self, db: Database, *, interval_s: float = INTERVAL_S, keep_days: int = SESSION_KEEP_DAYS) -> None:
        self.db = db
        self.keep_days = keep_days
        self.lead = every(interval_s, self.prune, "session-retention")

    async def prune(self, leadership: Leadership) -> int:
        async with self.db.system_tx() as conn:
            await leadership.fence(conn)
            deleted = await SessionRepository(conn).delete_ended(self.keep_days)
        if deleted:
            log.info("old browser sessions pruned", sessions=deleted)
        return deleted
