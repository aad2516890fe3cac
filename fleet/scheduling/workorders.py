"""The work-order jobs, run by the scheduler leader: alarms to work orders every half minute,
and forgetting day-old Idempotency-Keys every hour."""

from __future__ import annotations

from fleet.db import Database
from fleet.idempotency.service import IdempotencyService
from fleet.scheduling.leader import Leadership, every
from fleet.workorders.automation import open_for_alarms

ALARM_PASS_S = 30.0
PRUNE_EVERY = 120  # alarm passes, i.e. an hour


class WorkOrderJobs:
    def __init__(self, db: Database, *, interval_s: float = ALARM_PASS_S) -> None:
        self.db = db
        self.passes = 0
        self.lead = every(interval_s, self.run, "work-order-jobs")

    async def run(self, leadership: Leadership) -> None:
        passes, self.passes = self.passes, self.passes + 1
        await open_for_alarms(self.db, fence=leadership.fence)
        if passes % PRUNE_EVERY == 0:
            await IdempotencyService(self.db).prune()
