"""The leader keeps bin fill profiles current: a first pass as soon as it leads."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from fleet.scheduling.forecast import FillProfileJobs
from fleet.scheduling.leader import LeaderElection, together
from tests.conftest import make_city
from tests.fleet.collection.forecast_helpers import add_bin, sawtooth, write_fills
from tests.scheduling.conftest import eventually


async def test_the_leader_profiles_the_bins_soon_after_leading(db):
    city = await make_city(db, "seoul")
    bin_id = await add_bin(db, city.principal, "bin-1")
    await write_fills(db, city.tenant_id, bin_id, datetime.now(UTC) - timedelta(hours=48), 48, sawtooth(2.0))
    jobs = FillProfileJobs(db, interval_s=3600)
    task = asyncio.create_task(LeaderElection(db, "node-a", retry_s=0.1, check_s=0.2).run(together(jobs.lead)))
    try:
        await eventually(lambda: jobs.passes == 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    async with db.tenant_tx(city.tenant_id) as conn:
        row = await conn.fetchrow("select through, last_emptied_at from bin_fill_profiles where device_id = $1", bin_id)
        drops = await conn.fetchval("select count(*) from bin_emptyings where source = 'drop'")
    assert row["through"] is not None and row["last_emptied_at"] is not None and drops == 1
