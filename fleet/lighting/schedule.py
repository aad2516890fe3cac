"""The effective dimming level of a light over time: calendar switch points merged with overrides.

All functions are pure: timezone-aware datetimes in, UTC datetimes out; `location` is the
light's (latitude, longitude) and `tz` the tenant's IANA zone. The caller passes only the
overrides whose scope covers the light.

The night of date D runs from D 12:00 to D+1 12:00 local time and the program the calendar
selects for D (first matching rule, else the default) governs all of it. Sunset-based points
and local times >= 12:00 fall on D, sunrise-based points and local times < 12:00 on D+1; a
level holds until the next point fires, across nights. `fleet.lighting.night` documents the
rest of the placement: DST gaps and overlaps, short summer nights, midnight sun, polar night.

On top of the calendar, the active override with the highest priority wins, ties going to the
newest `created_at`; when it ends, the calendar resumes at the level its last switch point set,
as if the override had never been there.

A light no calendar governs (`calendar` None) has a level only while an override covers it; when
the last one ends the timeline says RESUME: the light goes back to the level it had before,
which only the scheduler knows (`fleet.lighting.reconcile`).
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from zoneinfo import ZoneInfo

from fleet.lighting.astro import Location
from fleet.lighting.models import Calendar, Override
from fleet.lighting.night import ONE_DAY, night_of, place_program

UTC = dt.UTC
NEXT_TRANSITION_HORIZON = dt.timedelta(days=2)


class LevelSource(enum.StrEnum):
    """What set a light's level."""

    OVERRIDE = "override"
    CALENDAR = "calendar"  # a calendar rule picked the program
    DEFAULT = "default"  # no rule matched; the calendar's default program ran
    RESUME = "resume"  # the overrides of a light without a calendar ended: back to its level before


@dataclass(frozen=True)
class LevelDecision:
    """The dimming level a light should have at an instant, what set it, and since when (UTC)."""

    dimming_level: int
    source: LevelSource
    since: dt.datetime
    program_id: str | None = None
    rule_id: str | None = None
    switch_point_id: str | None = None
    override_id: str | None = None


@dataclass(frozen=True)
class Transition:
    """An instant (UTC) at which the effective dimming level changes, and what changed it."""

    at: dt.datetime
    dimming_level: int | None  # None only with source RESUME
    source: LevelSource
    program_id: str | None = None
    rule_id: str | None = None
    switch_point_id: str | None = None
    override_id: str | None = None


class _Setting(NamedTuple):  # a tuple, because tens of thousands of lights build many of them
    """What sets the level over one stretch of time; equal settings mean an unbroken stretch."""

    dimming_level: int
    source: LevelSource
    program_id: str | None = None
    rule_id: str | None = None
    switch_point_id: str | None = None
    override_id: str | None = None
    fired_at: dt.datetime | None = None  # tells apart the same switch point on different nights

    def decision(self, since: dt.datetime) -> LevelDecision:
        return LevelDecision(self.dimming_level, self.source, since, self.program_id,
                             self.rule_id, self.switch_point_id, self.override_id)

    def transition(self, at: dt.datetime) -> Transition:
        return Transition(at, self.dimming_level, self.source, self.program_id, self.rule_id,
                          self.switch_point_id, self.override_id)


class _Timeline:
    """Calendar switch points of the nights around [first, last], and the overrides over them."""

    def __init__(self, calendar: Calendar | None, overrides: Iterable[Override], location: Location,
                 tz: str, first: dt.datetime, last: dt.datetime) -> None:
        zone = ZoneInfo(tz)
        # The night before `first` is included because its last switch point still holds
        # at the start of the next night; every night has at least one switch point.
        night = night_of(first, zone) - ONE_DAY
        final_night = night_of(last, zone)
        self._steps: list[_Setting] = []
        while calendar is not None and night <= final_night:
            program, rule = calendar.select(night)
            source = LevelSource.DEFAULT if rule is None else LevelSource.CALENDAR
            rule_id = None if rule is None else rule.rule_id
            for placed in place_program(program, night, location, zone):
                # A night's last point may share the noon instant with the next night's first;
                # both stay, and the lookups below take the later one, as within a night.
                self._steps.append(_Setting(placed.dimming_level, source, program.program_id,
                                            rule_id, placed.switch_point_id, fired_at=placed.at))
            night += ONE_DAY
        self._step_times = [step.fired_at for step in self._steps]
        self._overrides = tuple(overrides)

    def setting(self, at: dt.datetime, *, just_before: bool = False) -> _Setting | None:
        """What sets the level at `at` (or an instant before it); None before the known steps."""
        active = [override for override in self._overrides
                  if (override.starts_at < at <= override.ends_at if just_before
                      else override.is_active(at))]
        if active:
            winner = max(active, key=lambda override: override.precedence)
            return _Setting(winner.dimming_level, LevelSource.OVERRIDE, override_id=winner.override_id)
        find = bisect.bisect_left if just_before else bisect.bisect_right
        index = find(self._step_times, at) - 1
        return self._steps[index] if index >= 0 else None

    def changes(self, start: dt.datetime | None, end: dt.datetime) -> list[dt.datetime]:
        """Every instant in [start, end) at which the setting may change, in order."""
        def within(instant: dt.datetime) -> bool:
            return (start is None or start <= instant) and instant < end
        instants = {step_time for step_time in self._step_times if within(step_time)}
        for override in self._overrides:
            instants.update(bound for bound in (override.starts_at, override.ends_at) if within(bound))
        return sorted(instants)

    def since(self, at: dt.datetime, current: _Setting) -> dt.datetime:
        """When the unbroken stretch of `current` that contains `at` began."""
        since = at
        for instant in reversed(self.changes(None, at + dt.timedelta(microseconds=1))):
            if self.setting(instant) != current:
                break
            since = instant
        return since


def level_at(calendar: Calendar | None, overrides: Sequence[Override], location: Location, tz: str,
             at: dt.datetime) -> LevelDecision | None:
    """The dimming level at `at`, what set it, and since when that has been so.

    None only without a calendar, when no override is active at `at`."""
    at = _utc(at, "at")
    timeline = _Timeline(calendar, overrides, location, tz, at, at)
    current = timeline.setting(at)
    if current is None:
        assert calendar is None  # the night before `at` always has a switch point
        return None
    return current.decision(timeline.since(at, current))


def transitions(calendar: Calendar | None, overrides: Sequence[Override], location: Location, tz: str,
                start: dt.datetime, end: dt.datetime) -> list[Transition]:
    """Every instant in [start, end) where the effective dimming level changes, in order."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        return []
    timeline = _Timeline(calendar, overrides, location, tz, start, end)
    previous = timeline.setting(start, just_before=True)
    assert previous is not None or calendar is None
    level = None if previous is None else previous.dimming_level
    found = []
    for instant in timeline.changes(start, end):
        setting = timeline.setting(instant)
        if setting is None:  # without a calendar: the last override ended
            if level is not None:
                found.append(Transition(instant, None, LevelSource.RESUME))
            level = None
        elif setting.dimming_level != level:
            found.append(setting.transition(instant))
            level = setting.dimming_level
    return found


def next_transition(calendar: Calendar | None, overrides: Sequence[Override], location: Location, tz: str,
                    after: dt.datetime, within: dt.timedelta = NEXT_TRANSITION_HORIZON) -> Transition | None:
    """The first level change strictly after `after`, or None if none comes `within` that time.

    None is normal in midnight-sun weeks (lights off for days); the scheduler should ask again
    once `within` has passed.
    """
    after = _utc(after, "after")
    for transition in transitions(calendar, overrides, location, tz, after, after + within):
        if transition.at > after:
            return transition
    return None


def _utc(instant: dt.datetime, name: str) -> dt.datetime:
    if instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {instant!r}")
    return instant.astimezone(UTC)
