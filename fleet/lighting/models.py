"""Dimming schedules as TALQ models them: control programs, calendars and overrides.

Calendar rules are tried in order and the first rule matching a night's date picks that night's
program; a rule matches when every criterion it sets (date range, weekdays, specific dates)
matches, and nights no rule matches run the calendar's default program.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
from dataclasses import dataclass, field

from fleet.errors import FieldError, ValidationFailed

MAX_OFFSET_MINUTES = 12 * 60
NOON = dt.time(12, 0)

MonthDay = tuple[int, int]


class Anchor(enum.StrEnum):
    """What a switch point's moment is measured from."""

    LOCAL_TIME = "local_time"
    SUNSET = "sunset"
    SUNRISE = "sunrise"


def _dimming_level_errors(level: object, name: str) -> list[FieldError]:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 100:
        return [FieldError(name, "must be a whole percentage 0-100 (0 = off)")]
    return []


def _require(errors: list[FieldError], detail: str) -> None:
    if errors:
        raise ValidationFailed(detail, errors)


@dataclass(frozen=True)
class SwitchPoint:
    """At a moment of the night, set the lights to `dimming_level` percent (0 = off).

    The moment is a local wall-clock time (HH:MM) or sunset/sunrise plus `offset_minutes`.
    """

    switch_point_id: str
    anchor: Anchor
    dimming_level: int
    local_time: dt.time | None = None
    offset_minutes: int = 0

    @classmethod
    def at_local_time(cls, switch_point_id: str, local_time: dt.time | str, dimming_level: int) -> SwitchPoint:
        if isinstance(local_time, str):
            try:
                local_time = dt.time.fromisoformat(local_time)
            except ValueError:
                raise ValidationFailed("invalid switch point", [FieldError("local_time", "must be HH:MM")]) from None
        return cls(switch_point_id, Anchor.LOCAL_TIME, dimming_level, local_time=local_time)

    @classmethod
    def at_sunset(cls, switch_point_id: str, dimming_level: int, offset_minutes: int = 0) -> SwitchPoint:
        return cls(switch_point_id, Anchor.SUNSET, dimming_level, offset_minutes=offset_minutes)

    @classmethod
    def at_sunrise(cls, switch_point_id: str, dimming_level: int, offset_minutes: int = 0) -> SwitchPoint:
        return cls(switch_point_id, Anchor.SUNRISE, dimming_level, offset_minutes=offset_minutes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "anchor", Anchor(self.anchor))
        errors = _dimming_level_errors(self.dimming_level, "dimming_level")
        if self.anchor is Anchor.LOCAL_TIME:  # whole minutes, because TALQ programs are HH:MM
            wall = self.local_time
            if not isinstance(wall, dt.time) or wall.tzinfo is not None or wall.second or wall.microsecond:
                errors.append(FieldError("local_time", "must be a wall-clock HH:MM without zone"))
            if self.offset_minutes:
                errors.append(FieldError("offset_minutes", "only sunset/sunrise points take an offset"))
        else:
            if self.local_time is not None:
                errors.append(FieldError("local_time", "only local-time points take a time"))
            offset = self.offset_minutes
            if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > MAX_OFFSET_MINUTES:
                errors.append(FieldError("offset_minutes", f"must be whole minutes within ±{MAX_OFFSET_MINUTES}"))
        _require(errors, f"invalid switch point {self.switch_point_id!r}")

    @property
    def in_morning(self) -> bool:
        """True when the point falls on the morning after the night's date (D+1), not its evening."""
        if self.anchor is Anchor.LOCAL_TIME:
            assert self.local_time is not None
            return self.local_time < NOON
        return self.anchor is Anchor.SUNRISE


def _minutes_into_night(wall: dt.time) -> int:
    return (wall.hour * 60 + wall.minute - 12 * 60) % (24 * 60)


def _increasing(values: list[int]) -> bool:
    return all(earlier < later for earlier, later in itertools.pairwise(values))


@dataclass(frozen=True)
class ControlProgram:
    """A night's dimming profile: switch points listed in the order they fire from noon to noon.

    Evening points (sunset-based, or local time >= 12:00) come before morning points
    (sunrise-based, or local time < 12:00); local times and same-anchor offsets increase.
    """

    program_id: str
    switch_points: tuple[SwitchPoint, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "switch_points", tuple(self.switch_points))
        points = self.switch_points
        errors: list[FieldError] = []
        if not points:
            errors.append(FieldError("switch_points", "needs at least one switch point"))
        ids = [point.switch_point_id for point in points]
        if len(set(ids)) != len(ids):
            errors.append(FieldError("switch_points", "switch point ids must be unique"))
        mornings = [point.in_morning for point in points]
        if mornings != sorted(mornings):
            errors.append(FieldError("switch_points", "evening points (sunset, >= 12:00) come before morning ones"))
        minutes = [_minutes_into_night(point.local_time) for point in points if point.local_time is not None]
        if not _increasing(minutes):
            errors.append(FieldError("switch_points", "local times must increase through the night"))
        for anchor in (Anchor.SUNSET, Anchor.SUNRISE):
            if not _increasing([point.offset_minutes for point in points if point.anchor is anchor]):
                errors.append(FieldError("switch_points", f"{anchor} offsets must increase"))
        _require(errors, f"invalid control program {self.program_id!r}")

    @property
    def follows_sun(self) -> bool:
        return any(point.anchor is not Anchor.LOCAL_TIME for point in self.switch_points)


@dataclass(frozen=True)
class DateRange:
    """Inclusive span of dates in given years, e.g. 2026-12-20 .. 2027-01-06."""

    first: dt.date
    last: dt.date

    def __post_init__(self) -> None:
        _require([FieldError("last", "must not be before first")] if self.first > self.last else [],
                 "invalid date range")

    def contains(self, day: dt.date) -> bool:
        return self.first <= day <= self.last


@dataclass(frozen=True)
class YearlyDateRange:
    """Inclusive span of (month, day) recurring every year; wraps past new year when first > last."""

    first: MonthDay
    last: MonthDay

    def __post_init__(self) -> None:
        object.__setattr__(self, "first", tuple(self.first))
        object.__setattr__(self, "last", tuple(self.last))
        errors = []
        for name in ("first", "last"):
            try:
                dt.date(2000, *getattr(self, name))  # a leap year, so (2, 29) is allowed
            except (TypeError, ValueError):
                errors.append(FieldError(name, "must be a valid (month, day)"))
        _require(errors, "invalid yearly date range")

    def contains(self, day: dt.date) -> bool:
        month_day = (day.month, day.day)
        if self.first <= self.last:
            return self.first <= month_day <= self.last
        return month_day >= self.first or month_day <= self.last


@dataclass(frozen=True)
class CalendarRule:
    """Picks `program_id` for the nights whose date matches every criterion the rule sets.

    `weekdays` are ISO numbers (1 = Monday .. 7 = Sunday); `dates` are specific dates such as
    holidays and festivals.
    """

    rule_id: str
    program_id: str
    date_range: DateRange | YearlyDateRange | None = None
    weekdays: frozenset[int] = frozenset()
    dates: frozenset[dt.date] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "weekdays", frozenset(self.weekdays))
        object.__setattr__(self, "dates", frozenset(self.dates))
        errors = []
        if self.date_range is None and not self.weekdays and not self.dates:
            errors.append(FieldError("rule", "set a date range, weekdays or dates"))  # else it matches all
        if not self.weekdays <= set(range(1, 8)):
            errors.append(FieldError("weekdays", "must be ISO weekdays 1 (Monday) .. 7 (Sunday)"))
        _require(errors, f"invalid calendar rule {self.rule_id!r}")

    def matches(self, night: dt.date) -> bool:
        return ((self.date_range is None or self.date_range.contains(night))
                and (not self.weekdays or night.isoweekday() in self.weekdays)
                and (not self.dates or night in self.dates))


@dataclass(frozen=True)
class Calendar:
    """Which program runs each night: the first matching rule wins, else the default program."""

    calendar_id: str
    programs: tuple[ControlProgram, ...]
    default_program_id: str
    rules: tuple[CalendarRule, ...] = ()
    _programs_by_id: dict[str, ControlProgram] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "programs", tuple(self.programs))
        object.__setattr__(self, "rules", tuple(self.rules))
        by_id = {program.program_id: program for program in self.programs}
        object.__setattr__(self, "_programs_by_id", by_id)
        errors = []
        if len(by_id) != len(self.programs):
            errors.append(FieldError("programs", "program ids must be unique"))
        if self.default_program_id not in by_id:
            errors.append(FieldError("default_program_id", f"unknown program {self.default_program_id!r}"))
        rule_ids = [rule.rule_id for rule in self.rules]
        if len(set(rule_ids)) != len(rule_ids):
            errors.append(FieldError("rules", "rule ids must be unique"))
        errors += [FieldError(f"rules[{index}].program_id", f"unknown program {rule.program_id!r}")
                   for index, rule in enumerate(self.rules) if rule.program_id not in by_id]
        _require(errors, f"invalid calendar {self.calendar_id!r}")

    def select(self, night: dt.date) -> tuple[ControlProgram, CalendarRule | None]:
        """The program for the night starting on `night`, and the rule that chose it (None: default)."""
        for rule in self.rules:
            if rule.matches(night):
                return self._programs_by_id[rule.program_id], rule
        return self._programs_by_id[self.default_program_id], None


@dataclass(frozen=True)
class Override:
    """A temporary dimming level for a scope (district, group or devices) that outranks the calendar.

    Active on [starts_at, ends_at); among active overrides the highest priority wins, then the
    newest `created_at`, then the greatest id so the choice never depends on input order.
    """

    override_id: str
    scope: str
    dimming_level: int
    priority: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    created_at: dt.datetime

    def __post_init__(self) -> None:
        errors = _dimming_level_errors(self.dimming_level, "dimming_level")
        for name in ("starts_at", "ends_at", "created_at"):
            instant = getattr(self, name)
            if instant.utcoffset() is None:
                errors.append(FieldError(name, "must be timezone-aware"))
            else:
                object.__setattr__(self, name, instant.astimezone(dt.UTC))
        if not errors and self.ends_at <= self.starts_at:
            errors.append(FieldError("ends_at", "must be after starts_at"))
        _require(errors, f"invalid override {self.override_id!r}")

    def is_active(self, at: dt.datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    @property
    def precedence(self) -> tuple[int, dt.datetime, str]:
        return self.priority, self.created_at, self.override_id
