"""Two nodes run the collection jobs under one leadership: the evening's plan is built once."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from fleet.scheduling.collection import CollectionJobs
from fleet.scheduling.leader import LeaderElection
from tests.conftest import make_city
from tests.fleet.collection.route_fixtures import add_vehicle, planner
from tests.scheduling.conftest import eventually


async def test_the_leader_builds_the_evening_plan_once(db):
    city = await make_city(db, "seoul")
    await add_vehicle(db, city.tenant_id)
    calls: list = []
    evening = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)  # 18:30 in Seoul
    nodes = [CollectionJobs(db, build_plan=planner(calls), clock=lambda: evening, fill_interval_s=0.1,
                            evening_interval_s=0.1) for _ in range(2)]
    tasks = [asyncio.create_task(LeaderElection(db, f"node-{n}", retry_s=0.1, check_s=0.2).run(jobs.lead))
             for n, jobs in enumerate(nodes)]
    try:
        await eventually(lambda: calls)
        await asyncio.sleep(0.5)  # several more passes
        async with db.system_tx() as conn:
            plans = await conn.fetch("select date, status from collection_plans where source = 'schedule'")
        assert [(str(p["date"]), p["status"]) for p in plans] == [("2026-12-08", "ready")] and len(calls) == 1
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
