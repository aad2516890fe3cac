"""The demo's bins start with two weeks of fill history, so their forecasts are their own from
the first minute, not null until two days of live readings have passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleet.collection.forecasting import forecasts
from fleet.registry.models import DeviceFilter, DeviceKind
from fleet.registry.service import DeviceService
from fleet.access.service import system_principal
from simulators.seed import seed_demo_city
from simulators.seed_fill_history import FILL, GAP, HISTORY_DAYS, seed_demo_fill_history


async def test_the_demo_bins_forecast_from_their_own_history(db):
    seeded = await seed_demo_city(db)
    now = datetime.now(UTC)
    stored = await seed_demo_fill_history(db, seeded.city, now=now)
    bins = (await DeviceService(db).list(system_principal(seeded.city), DeviceFilter(kind=DeviceKind.WASTE_BIN),
                                         limit=500)).items
    assert stored == len(bins) * HISTORY_DAYS * 24
    async with db.system_tx() as conn:
        first, last, in_default = await conn.fetchrow(
            """select min(time), max(time), count(*) filter (where tableoid = 'telemetry_default'::regclass)
               from telemetry where tenant_id = $1 and path = $2""", seeded.city.id, FILL)
    assert last <= now - GAP and first >= now - GAP - timedelta(days=HISTORY_DAYS)
    assert in_default == 0  # each day of the history has its partition
    some = [b.id for b in bins[:5]]
    async with db.tenant_tx(seeded.city.id) as conn:
        ahead = await forecasts(conn, seeded.city.id, until=now + timedelta(hours=48), device_ids=some, now=now)
    assert [f.basis for f in ahead] == ["bin"] * len(some)
    assert all(f.rate_per_hour and f.rate_per_hour > 0 for f in ahead)
