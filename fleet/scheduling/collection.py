"""The waste-collection jobs, run by the scheduler leader: stops completed by their bins' fill
drop every half minute, and each city's plan for tomorrow once its evening comes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from fleet.collection import planning
from fleet.collection.automation import BuildPlan, complete_by_fill, plan_evenings
from fleet.db import Database
from fleet.scheduling.leader import Leadership, every, together

FILL_PASS_S = 30.0
EVENING_PASS_S = 60.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CollectionJobs:
    def __init__(self, db: Database, *, routing_url: str | None = None, build_plan: BuildPlan | None = None,
                 clock: Callable[[], dt.datetime] = utc_now, fill_interval_s: float = FILL_PASS_S,
                 evening_interval_s: float = EVENING_PASS_S) -> None:
        self.db = db
        self.routing_url = routing_url
        self.build_plan = build_plan or planning.build_plan
        self.clock = clock
        self.lead = together(every(fill_interval_s, self.complete_by_fill, "collection-fill"),
                             every(evening_interval_s, self.plan_evenings, "collection-evening-plan"))

    async def complete_by_fill(self, leadership: Leadership) -> int:
        return await complete_by_fill(self.db, self.clock(), fence=leadership.fence)

    async def plan_evenings(self, leadership: Leadership) -> list:
        return await plan_evenings(self.db, self.build_plan, self.clock(), fence=leadership.fence,
                                   routing_url=self.routing_url)
