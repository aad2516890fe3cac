"""Fill forecasts for planning and the REST routes: each bin's fill now (device_state), its learned
profile (bin_fill_profiles) or, with too little history, its district's or city's rates for its
waste kind, integrated forward (fleet.collection.forecast)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from fleet.collection.forecast import (DEFAULT_SD, MIN_HISTORY_H, Profile, effective_rates, learn,
                                       mean_profile, predict)
from fleet.collection.forecast_repository import ForecastRepository, profile_from
from fleet.collection.models import FillForecast

# Hours of time to threshold/full looked for past `until` (a bin full the day after tomorrow is
# worth knowing even when the plan is for tomorrow).
MIN_HORIZON = timedelta(hours=72)
# Bins the leader's job has not profiled yet are learned on the spot from this much telemetry,
# as long as there are few of them; otherwise they borrow their district's rates.
ON_THE_SPOT_DAYS = 28
ON_THE_SPOT_MAX_BINS = 50


async def forecasts(conn: asyncpg.Connection, tenant_id: UUID, *, until: datetime,
                    device_ids: Sequence[UUID] | None = None, district: str | None = None,
                    waste_kind: str | None = None, now: datetime | None = None,
                    after: UUID | None = None, limit: int | None = None,
                    horizon: datetime | None = None) -> list[FillForecast]:
    """Each bin's forecast (the city's waste bins that are not decommissioned, maintenance ones
    included, or those named/filtered; by id, from after `after`, at most `limit`), in a
    transaction the caller holds on the city's side of the wall. Times to threshold and to full
    are looked for up to `horizon` (at least `until` and MIN_HORIZON from now)."""
    now = now or datetime.now(UTC)
    repo = ForecastRepository(conn)
    threshold = await repo.threshold(tenant_id)
    tz = ZoneInfo(await repo.timezone(tenant_id) or "UTC")
    rows = await repo.bins(tenant_id, device_ids=device_ids, district=district, waste_kind=waste_kind,
                           after=after, limit=limit)
    profiles = {r["id"]: profile_from(r) for r in rows}
    unprofiled = [r["id"] for r in rows if profiles[r["id"]] is None]
    if unprofiled and len(unprofiled) <= ON_THE_SPOT_MAX_BINS:
        since = now - timedelta(days=ON_THE_SPOT_DAYS)
        readings = await repo.readings(tenant_id, {d: since for d in unprofiled})
        known = await repo.known_emptyings(tenant_id, {d: since for d in unprofiled})
        for d in unprofiled:
            profiles[d] = learn(None, readings.get(d, []), known.get(d, []), tz).profile
    thin = [r for r in rows if not _learned(profiles[r["id"]])]
    borrowed = await _borrowed(repo, tenant_id, {r["waste_kind"] for r in thin}) if thin else {}
    horizon = max(until, now + MIN_HORIZON, horizon or until)
    out = []
    for r in rows:
        profile = profiles[r["id"]]
        if _learned(profile):
            basis, rates, sd = "bin", effective_rates(profile), profile.residual_sd or DEFAULT_SD
        else:
            basis, (rates, sd) = next(
                ((b, borrowed[key]) for b, key in (("district", (r["district"], r["waste_kind"])),
                                                   ("city", (None, r["waste_kind"])))
                 if key in borrowed), ("none", (None, DEFAULT_SD)))
        emptied = max((t for t in (r["emptied_at"], profile.last_emptied_at if profile else None)
                       if t is not None), default=None)
        fill, fill_at = r["fill_now"], r["fill_at"]
        if fill is not None and emptied is not None and emptied > fill_at:
            fill, fill_at = 0.0, emptied  # emptied since its last reading
        if fill is None or rates is None:
            out.append(FillForecast(r["id"], r["waste_kind"], r["district"], fill, fill_at, None, until,
                                    None, None, None, None, None, threshold, emptied, basis,
                                    r["endpoint"]))
            continue
        p = predict(rates, sd, fill, min(fill_at, now), now, until, threshold, tz, horizon=horizon)
        out.append(FillForecast(r["id"], r["waste_kind"], r["district"], r["fill_now"], r["fill_at"],
                                round(p.fill_until, 1), until, round(p.rate_per_hour, 3),
                                _hours(p.hours_to_threshold), _hours(p.hours_to_threshold_low),
                                _hours(p.hours_to_threshold_high), _hours(p.hours_to_full),
                                threshold, emptied, basis, r["endpoint"]))
    return out


def _hours(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _learned(profile: Profile | None) -> bool:
    return profile is not None and profile.history_h >= MIN_HISTORY_H


async def _borrowed(repo: ForecastRepository, tenant_id: UUID, kinds: set[str | None]
                    ) -> dict[tuple[str | None, str | None], tuple[list[float], float]]:
    """Mean rates of the bins that learned enough: per (district, kind) and per (None, kind)."""
    groups: dict[tuple[str | None, str | None], list[tuple[list[float], float]]] = defaultdict(list)
    for row in await repo.learned_profiles(tenant_id, list(kinds), MIN_HISTORY_H):
        profile = profile_from(row)
        if profile is None:
            continue
        one = (effective_rates(profile), profile.residual_sd or DEFAULT_SD)
        if row["district"] is not None:
            groups[(row["district"], row["waste_kind"])].append(one)
        groups[(None, row["waste_kind"])].append(one)
    return {key: mean_profile([r for r, _ in ones], [s for _, s in ones]) for key, ones in groups.items()}
