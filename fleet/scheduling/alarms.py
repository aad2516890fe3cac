"""The alarm jobs the scheduler leader runs: the hourly look for fill sensors stuck while their
neighbours' fills move (the one rule that needs days of history, not the report in hand)."""

from __future__ import annotations

from fleet.alarms.rules.service import StuckFillSweep
from fleet.alarms.service import AlarmService
from fleet.db import Database
from fleet.scheduling.leader import Leadership, every

STUCK_FILL_INTERVAL_S = 3600.0


class AlarmJobs:
    def __init__(self, db: Database, alarms: AlarmService, *,
                 interval_s: float = STUCK_FILL_INTERVAL_S) -> None:
        self.sweep = StuckFillSweep(db, alarms.apply, settings=alarms.effective_settings)
        self.lead = every(interval_s, self.run, "stuck-fill-sweep")

    async def run(self, _leadership: Leadership) -> None:
        # Not fenced: a deposed leader's last sweep at worst repeats a finding, which the
        # alarm lifecycle merges into the one open alarm.
        await self.sweep.run()
