"""Building a device's context and observed values for the pure rule tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from fleet.alarms.rules.models import DeviceContext, Observed, Value
from fleet.alarms.settings import merged

# Seoul, 2026-06-21: sunrise about 05:11 KST (20:11 UTC the day before), sunset about 19:57 KST.
NOON_KST = datetime(2026, 6, 21, 3, 0, tzinfo=UTC)
MIDNIGHT_KST = datetime(2026, 6, 21, 15, 0, tzinfo=UTC)


def context(kind: str, **overrides) -> DeviceContext:
    settings = overrides.pop("settings", {})
    place = {"lat": 37.57, "lon": 126.98, "timezone": "Asia/Seoul"} | overrides
    return DeviceContext(tenant_id=uuid.uuid4(), device_id=uuid.uuid4(), kind=kind,
                         settings=merged(settings), **place)


def observed(at: datetime, **values) -> Observed:
    """Values keyed by path with '/' written as '_' and a leading 'p': p3_0_9=42."""
    seen = Observed()
    for key, value in values.items():
        seen.latest["/" + key[1:].replace("_", "/")] = Value(at, value)
    return seen


def with_previous(seen: Observed, path: str, value, before: timedelta) -> Observed:
    seen.previous[path] = Value(seen.latest[path].time - before, value)
    return seen


@pytest.fixture
def noon() -> datetime:
    return NOON_KST
