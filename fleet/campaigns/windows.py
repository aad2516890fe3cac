"""When a device may install: maintenance windows in the city's local time (pure logic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from fleet.campaigns.models import Window

ALL_WEEKDAYS = (1, 2, 3, 4, 5, 6, 7)


@dataclass(frozen=True, slots=True)
class OpenHours:
    """One window: from `starts` to `ends` local time, opening on the ISO `weekdays`; a window
    whose end is before its start crosses midnight and belongs to the day it opened."""

    starts: time
    ends: time
    weekdays: tuple[int, ...] = ALL_WEEKDAYS

    def is_open(self, local: datetime) -> bool:
        now = local.time().replace(tzinfo=None)
        today = local.isoweekday()
        if self.starts < self.ends:
            return today in self.weekdays and self.starts <= now < self.ends
        if now >= self.starts:
            return today in self.weekdays
        yesterday = (local - timedelta(days=1)).isoweekday()
        return now < self.ends and yesterday in self.weekdays


def campaign_hours(window: Window | None) -> OpenHours | None:
    if window is None:
        return None
    return OpenHours(time.fromisoformat(window.start), time.fromisoformat(window.end))


def applicable(campaign: OpenHours | None, groups: Sequence[OpenHours],
               city: Sequence[OpenHours]) -> Sequence[OpenHours]:
    """A device's windows: the campaign's own if it has one; else its groups' if any of its
    groups has one; else the city's. None at all means any time."""
    if campaign is not None:
        return (campaign,)
    return groups or city


def is_open(windows: Sequence[OpenHours], at: datetime, timezone: str) -> bool:
    """Whether any of `windows` is open at the instant `at` (aware), in the city's `timezone`."""
    if not windows:
        return True
    local = at.astimezone(ZoneInfo(timezone))
    return any(w.is_open(local) for w in windows)
