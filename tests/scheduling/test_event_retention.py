"""The leader prunes events past the retention in batches; a deposed leader prunes nothing."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from fleet.events.models import ALARM_RAISED
from fleet.events.service import publish
from fleet.scheduling.leader import LeaderElection, NotLeader, together
from fleet.scheduling.retention import EventRetention
from tests.conftest import make_city
from tests.scheduling.conftest import eventually


async def _aged_events(db, city, old: int, new: int) -> None:
    async with db.system_tx() as conn:
        for n in range(old + new):
            await publish(conn, city.tenant_id, ALARM_RAISED, "alarm", f"a{n}", {"n": n})
        await conn.execute(
            "update events set at = now() - interval '8 days' where (payload->>'n')::int < $1", old)


async def test_the_leader_prunes_what_is_past_the_retention_in_batches(db):
    city = await make_city(db, "seoul")
    await _aged_events(db, city, old=25, new=3)
    retention = EventRetention(db, retention_days=7, batch=10, interval_s=3600)
    election = LeaderElection(db, "node-a", retry_s=0.1, check_s=0.2)
    task = asyncio.create_task(election.run(together(retention.lead)))
    try:
        await eventually(lambda: retention.pruned == 25)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    async with db.system_tx() as conn:
        assert sorted(await conn.fetchval("select array_agg((payload->>'n')::int) from events")) == [25, 26, 27]
        assert await conn.fetchval("select count(*) from events_pruned where tenant_id = $1", city.tenant_id) == 1


async def test_a_deposed_leader_prunes_nothing(db):
    city = await make_city(db, "seoul")
    await _aged_events(db, city, old=5, new=0)
    election = LeaderElection(db, "node-a", retry_s=0.1, check_s=0.2)
    captured = []

    @contextlib.asynccontextmanager
    async def capture(leadership):
        captured.append(leadership)
        yield

    task = asyncio.create_task(election.run(capture))
    await eventually(lambda: captured)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    async with db.system_tx() as conn:  # another node took over meanwhile
        await conn.execute("update scheduler_leadership set epoch = epoch + 1")
    with pytest.raises(NotLeader):
        await EventRetention(db).prune(captured[0])
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from events") == 5
