"""The work-order jobs, run by the scheduler leader: alarms to work orders every half minute,
and forgetting day-old Idempotency-Keys every hour."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from fleet.db import Database
from fleet.idempotency.service import IdempotencyService
from fleet.scheduling.leader import Leadership, NotLeader
from fleet.workorders.automation import open_for_alarms

log = structlog.get_logger(__name__)

ALARM_PASS_S = 30.0
PRUNE_EVERY = 120  # alarm passes, i.e. an hour


class WorkOrderJobs:
    def __init__(self, db: Database, *, interval_s: float = ALARM_PASS_S) -> None:
        self.db = db
        self.interval_s = interval_s
        self.passes = 0

    @contextlib.asynccontextmanager
    async def lead(self, leadership: Leadership) -> AsyncIterator[None]:
        task = asyncio.create_task(self._run(leadership))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, leadership: Leadership) -> None:
        while True:
            try:
                await open_for_alarms(self.db, fence=leadership.fence)
                if self.passes % PRUNE_EVERY == 0:
                    await IdempotencyService(self.db).prune()
            except NotLeader:
                return
            except Exception:  # noqa: BLE001 - our bug or the database away; the next pass retries
                log.exception("work order jobs failed")
            self.passes += 1
            await asyncio.sleep(self.interval_s)
