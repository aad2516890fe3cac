"""The fill-profile job the scheduler leader runs: soon after leading, then every hour."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fleet.collection.profiling import refresh_all
from fleet.db import Database
from fleet.scheduling.leader import Leadership, every

PROFILE_INTERVAL_S = 3600.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FillProfileJobs:
    def __init__(self, db: Database, *, interval_s: float = PROFILE_INTERVAL_S,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self.db = db
        self.clock = clock
        # Per node: a new leader's first pass looks back over every Execute of the first look.
        self.last_pass: datetime | None = None
        self.lead = every(interval_s, self.run, "fill-profiles")

    async def run(self, leadership: Leadership) -> None:
        now = self.clock()
        await refresh_all(self.db, now, fence=leadership.fence, last_pass=self.last_pass)
        self.last_pass = now
