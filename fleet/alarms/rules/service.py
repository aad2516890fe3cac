"""The one condition judged on a clock rather than per report: a bin's fill sensor stuck."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import structlog

from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.rules.models import FindingSink, SettingsProvider
from fleet.alarms.rules.repository import RulesRepository
from fleet.alarms.settings import DEFAULTS
from fleet.db import Database

log = structlog.get_logger(__name__)

# Bins this close count as neighbours; a fill that moved less than MIN_CHANGE points did not
# move; a bin is stuck only while at least MIN_NEIGHBOURS_MOVING of its neighbours' fills move
# (a street closed for the holidays leaves every bin unchanged, and none of them is broken).
NEIGHBOUR_M = 500.0
MIN_CHANGE_PERCENT = 2.0
MIN_NEIGHBOURS_MOVING = 2
INTERVAL_S = 3600.0


class StuckFillSweep:
    """Set-based over the telemetry of fill_stuck_days per city (and group): run it hourly on
    the scheduler leader. A bin that reported fewer than two fills in the window, or whose
    neighbours did not move either, is not judged."""

    def __init__(self, db: Database, sink: FindingSink, *, settings: SettingsProvider | None = None) -> None:
        self.db = db
        self.sink = sink
        self.settings = settings

    async def run(self, now: datetime | None = None) -> list[Finding]:
        now = now or datetime.now(UTC)
        async with self.db.system_tx() as conn:
            bins = await RulesRepository(conn).bins_by_tenant()
        findings: list[Finding] = []
        for tenant_id, bin_ids in bins.items():
            settings = await self.settings(tenant_id, bin_ids) if self.settings is not None else {}
            by_days: dict[float, list] = defaultdict(list)
            for bin_id in bin_ids:
                by_days[settings.get(bin_id, DEFAULTS).fill_stuck_days].append(bin_id)
            for days, ids in by_days.items():
                async with self.db.system_tx() as conn:
                    rows = await RulesRepository(conn).stuck_fill(
                        tenant_id, ids, now - timedelta(days=days), now, NEIGHBOUR_M, MIN_CHANGE_PERCENT)
                findings.extend(_judged(row, days, now) for row in rows if _judgeable(row))
        if findings:
            await self.sink(findings)
        log.debug("stuck fill sensors swept", findings=len(findings),
                  stuck=sum(f.present for f in findings))
        return findings


def _judgeable(row) -> bool:
    return row["moved"] >= MIN_CHANGE_PERCENT or row["neighbours_moving"] >= MIN_NEIGHBOURS_MOVING


def _judged(row, days: float, now: datetime) -> Finding:
    stuck = row["moved"] < MIN_CHANGE_PERCENT
    detail = (f"fill at {row['fill']:g} % for {days:g} days while {row['neighbours_moving']} "
              f"neighbours changed" if stuck else "")
    return Finding(row["tenant_id"], row["device_id"], AlarmType.FILL_SENSOR_STUCK, stuck, now,
                   row["fill"], detail)
