"""What a rule sees of one device (its context and latest values) and what it hands on."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.settings import DEFAULTS, AlarmSettings

# Where findings go: AlarmService.apply in production, a list in tests.
FindingSink = Callable[[Sequence[Finding]], Awaitable[None]]
# A city's thresholds for some of its devices (AlarmService.effective_settings).
SettingsProvider = Callable[[UUID, Sequence[UUID]], Awaitable[dict[UUID, AlarmSettings]]]


@dataclass(frozen=True, slots=True)
class Target:
    """The dimming level the lighting schedule last commanded, and since when."""

    dimming_level: int
    since: datetime


@dataclass(slots=True)
class DeviceContext:
    """What rules need to know about a device besides its reports; cached briefly."""

    tenant_id: UUID
    device_id: UUID
    kind: str
    lat: float
    lon: float
    timezone: str
    nominal_w: float | None = None     # the registry's nominal_wattage attribute
    target: Target | None = None       # streetlights governed by a lighting schedule
    settings: AlarmSettings = DEFAULTS


@dataclass(frozen=True, slots=True)
class Value:
    time: datetime
    value: Any


@dataclass(slots=True)
class Observed:
    """One device's latest committed values of the paths rules read, and the value each path
    had before its latest one (for counters and rates), where this node saw it."""

    latest: dict[str, Value] = field(default_factory=dict)
    previous: dict[str, Value] = field(default_factory=dict)
    # Recent rates a rule keeps to compare with (an access point's throughput per radio).
    rates: dict[str, deque[float]] = field(default_factory=dict)
    rated_at: dict[str, datetime] = field(default_factory=dict)

    def get(self, path: str) -> Any:
        value = self.latest.get(path)
        return None if value is None else value.value

    def number(self, path: str) -> float | None:
        value = self.get(path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)


def finding(ctx: DeviceContext, type_: AlarmType, present: bool, at: datetime,
            value: Any = None, detail: str = "") -> Finding:
    return Finding(ctx.tenant_id, ctx.device_id, type_, present, at, value, detail)


# A condition: (context, observed values, now) -> a finding, or None when it cannot judge.
Condition = Callable[[DeviceContext, Observed, datetime], Finding | None]


@dataclass(frozen=True, slots=True)
class Rule:
    type: AlarmType
    reads: frozenset[str]  # judged again whenever one of these paths is reported
    condition: Condition
