"""Keeping bin_fill_profiles current: one city's pass over its bins in batches, each batch one
short transaction learning from the readings since each profile's `through`, and recording the
emptyings seen in the fill (source 'drop') and the "emptied" Executes (source 'execute')."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from fleet.collection.forecast import learn
from fleet.collection.forecast_repository import ForecastRepository, profile_from
from fleet.db import Database

log = structlog.get_logger(__name__)

# A new bin learns from this much of its past; 4 weeks keep the decayed weights meaningful.
FIRST_LOOK = timedelta(days=28)
# Bins per transaction: 200 bins × 4 weeks of hourly readings is ~135,000 rows, well under a
# second; a city of 20,000 bins is then 100 short transactions, never one long one.
BATCH = 200
# An Execute acknowledged this long before the pass may have been missed by the previous one.
EXECUTE_OVERLAP = timedelta(hours=2)

Fence = Callable[[asyncpg.Connection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PassReport:
    tenant_id: UUID
    bins: int
    readings: int
    drops: int
    executes: int


async def refresh_city(db: Database, tenant_id: UUID, now: datetime, *, fence: Fence | None = None,
                       batch: int = BATCH, last_pass: datetime | None = None) -> PassReport:
    """One pass over the city's bins; safe to repeat (profiles move on from `through`, emptyings
    are unique per bin, time and source)."""
    async with db.tenant_tx(tenant_id) as conn:
        if fence:
            await fence(conn)
        repo = ForecastRepository(conn)
        tz = ZoneInfo(await repo.timezone(tenant_id) or "UTC")
        executes = await repo.record_executes(tenant_id, (last_pass or now - FIRST_LOOK) - EXECUTE_OVERLAP)
    after, bins, readings_n, drops_n = None, 0, 0, 0
    while True:
        async with db.tenant_tx(tenant_id) as conn:
            if fence:
                await fence(conn)
            repo = ForecastRepository(conn)
            rows = await repo.bins_to_learn(tenant_id, after, batch)
            if not rows:
                break
            after = rows[-1]["id"]
            profiles = {r["id"]: profile_from(r) for r in rows}
            # A bin silent for longer than the first look starts over from there, not from its `through`.
            since = {d: max(p.through if p and p.through else now - FIRST_LOOK, now - FIRST_LOOK)
                     for d, p in profiles.items()}
            readings = await repo.readings(tenant_id, since)
            known = await repo.known_emptyings(tenant_id, {
                d: min(s, profiles[d].last_fill_at or s) if profiles[d] else s for d, s in since.items()})
            learned, drops = [], []
            for device_id, new in readings.items():
                result = learn(profiles[device_id], new, known.get(device_id, []), tz)
                learned.append((device_id, result.profile))
                drops.extend((device_id, e) for e in result.drops)
                readings_n += len(new)
            await repo.save_profiles(tenant_id, learned)
            await repo.record_drops(tenant_id, drops)
            bins, drops_n = bins + len(rows), drops_n + len(drops)
    report = PassReport(tenant_id, bins, readings_n, drops_n, executes)
    log.debug("fill profiles refreshed", tenant_id=str(tenant_id), bins=bins, readings=readings_n,
              drops=drops_n, executes=executes)
    return report


async def refresh_all(db: Database, now: datetime, *, fence: Fence | None = None,
                      last_pass: datetime | None = None) -> list[PassReport]:
    async with db.system_tx() as conn:
        tenants = await ForecastRepository(conn).cities_with_bins()
    return [await refresh_city(db, t, now, fence=fence, last_pass=last_pass) for t in tenants]
