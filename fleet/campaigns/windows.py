"""When a device may install: maintenance windows in the city's local time (pure logic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
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


    def closes_in(self, local: datetime) -> timedelta | None:
        """How long this window stays open from `local` (aware), None when it is closed."""
        if not self.is_open(local):
            return None
        end = local.replace(hour=self.ends.hour, minute=self.ends.minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        # In UTC: the wall clock may jump (daylight saving time) before the window closes.
        return end.astimezone(UTC) - local.astimezone(UTC)


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


def open_for(windows: Sequence[OpenHours], at: datetime, timezone: str) -> timedelta | None | bool:
    """How long a device with these windows may still install from `at`: False when none is
    open, None when no window restricts it (any time), else until the last open one closes."""
    if not windows:
        return None
    local = at.astimezone(ZoneInfo(timezone))
    left = [t for t in (w.closes_in(local) for w in windows) if t is not None]
    return max(left) if left else False
