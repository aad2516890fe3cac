"""A campaign's progress as people read it: devices per state and per wave, and an expected finish."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from fleet.campaigns.models import Campaign, CampaignSettings, CampaignStatus, DeviceState

# Devices still on their way; a running campaign ends when none is left.
UNDER_WAY = (DeviceState.PENDING, DeviceState.WAITING, DeviceState.DOWNLOADING, DeviceState.DOWNLOADED,
             DeviceState.INSTALLING, DeviceState.VERIFYING)
ENDED = (DeviceState.SUCCEEDED, DeviceState.FAILED, DeviceState.CANCELLED)
# Skipped devices never join a wave.
IN_WAVES = UNDER_WAY + ENDED


def expected_finish(status: CampaignStatus, started_at: datetime | None, counts: dict[str, int],
                    now: datetime) -> datetime | None:
    """When the devices still under way will have ended, at the rate devices ended since the
    start; None unless running with at least one device ended."""
    ended = sum(counts[s] for s in ENDED)
    if status is not CampaignStatus.RUNNING or started_at is None or ended == 0:
        return None
    elapsed_s = max((now - started_at).total_seconds(), 1.0)
    remaining = sum(counts[s] for s in UNDER_WAY)
    return now + timedelta(seconds=remaining * elapsed_s / ended)


def campaign_from_rows(row: asyncpg.Record, counts: Iterable[asyncpg.Record], now: datetime) -> Campaign:
    """A campaign row (with its image's version) and its (wave, state, n) counts."""
    per_state = {s.value: 0 for s in DeviceState}
    per_wave: dict[int, dict[str, int]] = {w: {s.value: 0 for s in IN_WAVES} for w in range(row["wave_count"])}
    for c in counts:
        per_state[c["state"]] += c["n"]
        if c["state"] != DeviceState.SKIPPED:
            per_wave.setdefault(c["wave"], {s.value: 0 for s in IN_WAVES})[c["state"]] += c["n"]
    waves: list[dict[str, Any]] = [{"wave": w, "devices": sum(states.values()), "counts": states}
                                   for w, states in sorted(per_wave.items())]
    status = CampaignStatus(row["status"])
    return Campaign(
        id=row["id"], name=row["name"], image_id=row["image_id"], status=status,
        status_reason=row["status_reason"], target=row["target"],
        settings=msgspec.convert(row["settings"], CampaignSettings), device_count=row["device_count"],
        wave_count=row["wave_count"], current_wave=row["current_wave"], start_at=row["start_at"],
        created_by=row["created_by"], created_at=row["created_at"], approved_by=row["approved_by"],
        approved_at=row["approved_at"], started_at=row["started_at"], paused_at=row["paused_at"],
        finished_at=row["finished_at"], version=row["version"], updated_at=row["updated_at"],
        counts=per_state, waves=waves, expected_finish=expected_finish(status, row["started_at"], per_state, now),
        image_version=row["image_version"], started_by=row["started_by"])
