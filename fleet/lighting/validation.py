"""Raw lighting input (programs, calendar rules, assignments, overrides) to validated values, and back to JSON.

The wire and the jsonb columns share one document form, so what a client sent is what it
reads back. Field names in errors are the client's: `switch_points[1].local_time`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

from fleet.errors import FieldError, ValidationFailed
from fleet.lighting.models import (Anchor, CalendarRule, ControlProgram, DateRange, SwitchPoint,
                                   YearlyDateRange)
from fleet.lighting.records import OverrideScope

NAME_LIMIT = 200
DESCRIPTION_LIMIT = 2000
TEXT_LIMIT = 300
MAX_SWITCH_POINTS = 48
MAX_RULES = 500
MAX_RULE_DATES = 366
MAX_OVERRIDE_DEVICES = 10_000
MAX_OVERRIDE_SPAN = dt.timedelta(days=31)
# Overrides are for now and the near future; a light pinned for months wants a calendar.
MAX_OVERRIDE_LEAD = dt.timedelta(days=366)

T = TypeVar("T")


class _Invalid(Exception):
    pass


def _has_control(text: str, allowed: str = "") -> bool:
    return any((ord(c) < 32 or c == "\x7f") and c not in allowed for c in text)


def name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("invalid name", [FieldError(field, "must be a non-empty string")])
    value = value.strip()
    if len(value) > NAME_LIMIT or _has_control(value):
        raise ValidationFailed("invalid name", [FieldError(
            field, f"at most {NAME_LIMIT} characters, without control characters")])
    return value


def description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > DESCRIPTION_LIMIT or _has_control(value, "\n\r\t"):
        raise ValidationFailed("invalid description", [FieldError(
            "description", f"a string of at most {DESCRIPTION_LIMIT} characters")])
    return value.strip()


def short_text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > TEXT_LIMIT or _has_control(value):
        raise ValidationFailed(f"invalid {field}", [FieldError(
            field, f"a non-empty string of at most {TEXT_LIMIT} characters, without control characters")])
    return value


def _collect(errors: list[FieldError], prefix: str, build: Callable[[], T]) -> T | None:
    """Run a constructor of the pure models, moving its field errors under `prefix`."""
    try:
        return build()
    except ValidationFailed as exc:
        errors += [FieldError(f"{prefix}.{e.field}" if prefix else e.field, e.message) for e in exc.errors]
    except _Invalid as exc:
        errors.append(FieldError(prefix, str(exc)))
    return None


def _uuid(value: Any) -> UUID:
    try:
        return value if isinstance(value, UUID) else UUID(str(value))
    except ValueError:
        raise _Invalid("must be a UUID") from None


def _list(value: Any, limit: int) -> list:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise _Invalid("must be a list")
    if len(value) > limit:
        raise _Invalid(f"at most {limit} entries")
    return list(value)


# -- control programs ------------------------------------------------------------------------

def switch_point(raw: Any, index: int) -> SwitchPoint:
    if not isinstance(raw, Mapping):
        raise _Invalid("must be an object")
    point_id = raw.get("id") or f"p{index + 1}"
    if not isinstance(point_id, str) or len(point_id) > 64 or _has_control(point_id):
        raise ValidationFailed("invalid switch point", [FieldError("id", "a string of at most 64 characters")])
    anchor = raw.get("anchor")
    if anchor not in tuple(Anchor):
        raise ValidationFailed("invalid switch point", [FieldError(
            "anchor", "must be one of: " + ", ".join(Anchor))])
    level = raw.get("dimming_level")
    if anchor == Anchor.LOCAL_TIME:
        local_time = raw.get("local_time")
        if not isinstance(local_time, str) or len(local_time) != 5:
            raise ValidationFailed("invalid switch point", [FieldError("local_time", "must be HH:MM")])
        if raw.get("offset_minutes"):
            raise ValidationFailed("invalid switch point", [FieldError(
                "offset_minutes", "only sunset/sunrise points take an offset")])
        return SwitchPoint.at_local_time(point_id, local_time, level)
    if raw.get("local_time") is not None:
        raise ValidationFailed("invalid switch point", [FieldError(
            "local_time", "only local-time points take a time")])
    return SwitchPoint(point_id, Anchor(anchor), level, offset_minutes=raw.get("offset_minutes") or 0)


def control_program(program_id: str, raw_points: Any) -> ControlProgram:
    errors: list[FieldError] = []
    try:
        items = _list(raw_points, MAX_SWITCH_POINTS)
    except _Invalid as exc:
        raise ValidationFailed("invalid control program", [FieldError("switch_points", str(exc))]) from None
    points = [_collect(errors, f"switch_points[{index}]", lambda r=raw, i=index: switch_point(r, i))
              for index, raw in enumerate(items)]
    if errors:
        raise ValidationFailed("invalid control program", errors)
    program = _collect(errors, "", lambda: ControlProgram(program_id, points))
    if errors:
        raise ValidationFailed("invalid control program", errors)
    return program


def switch_point_json(point: SwitchPoint) -> dict[str, Any]:
    document: dict[str, Any] = {"id": point.switch_point_id, "anchor": point.anchor.value}
    if point.anchor is Anchor.LOCAL_TIME:
        document["local_time"] = point.local_time.strftime("%H:%M")
    else:
        document["offset_minutes"] = point.offset_minutes
    document["dimming_level"] = point.dimming_level
    return document


# -- calendar rules --------------------------------------------------------------------------

def _date_range(raw: Any) -> DateRange | YearlyDateRange:
    if not isinstance(raw, Mapping) or set(raw) != {"first", "last"}:
        raise _Invalid("must be {first, last}: both YYYY-MM-DD, or both MM-DD for every year")
    first, last = raw["first"], raw["last"]
    if not isinstance(first, str) or not isinstance(last, str):
        raise _Invalid("first and last must be dates as text")
    if len(first) == len(last) == 5:
        try:
            return YearlyDateRange(_month_day(first), _month_day(last))
        except ValueError:
            raise _Invalid("MM-DD must be a valid month and day") from None
    try:
        return DateRange(dt.date.fromisoformat(first), dt.date.fromisoformat(last))
    except ValueError:
        raise _Invalid("must be {first, last}: both YYYY-MM-DD, or both MM-DD for every year") from None


def _month_day(text: str) -> tuple[int, int]:
    month, _, day = text.partition("-")
    return int(month), int(day)


def _dates(raw: Any) -> frozenset[dt.date]:
    try:
        return frozenset(dt.date.fromisoformat(d) for d in _list(raw, MAX_RULE_DATES))
    except (TypeError, ValueError):
        raise _Invalid("must be dates YYYY-MM-DD") from None


def _weekdays(raw: Any) -> frozenset[int]:
    days = _list(raw, 7)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in days):
        raise _Invalid("must be ISO weekdays 1 (Monday) .. 7 (Sunday)")
    return frozenset(days)


def calendar_rule(raw: Any, index: int) -> CalendarRule:
    if not isinstance(raw, Mapping):
        raise _Invalid("must be an object")
    errors: list[FieldError] = []
    unknown = set(raw) - {"id", "program_id", "date_range", "weekdays", "dates"}
    errors += [FieldError(key, "is not a rule field") for key in sorted(unknown)]
    rule_id = raw.get("id") or f"r{index + 1}"
    if not isinstance(rule_id, str) or len(rule_id) > 64 or _has_control(rule_id):
        errors.append(FieldError("id", "a string of at most 64 characters"))
    program_id = _collect(errors, "program_id", lambda: _uuid(raw.get("program_id")))
    date_range = None
    if raw.get("date_range") is not None:
        date_range = _collect(errors, "date_range", lambda: _date_range(raw["date_range"]))
    weekdays = _collect(errors, "weekdays", lambda: _weekdays(raw.get("weekdays")))
    dates = _collect(errors, "dates", lambda: _dates(raw.get("dates")))
    if errors:
        raise ValidationFailed("invalid calendar rule", errors)
    return CalendarRule(rule_id, str(program_id), date_range, weekdays, dates)


def calendar_rules(raw_rules: Any) -> tuple[CalendarRule, ...]:
    errors: list[FieldError] = []
    try:
        items = _list(raw_rules, MAX_RULES)
    except _Invalid as exc:
        raise ValidationFailed("invalid calendar", [FieldError("rules", str(exc))]) from None
    rules = [_collect(errors, f"rules[{index}]", lambda r=raw, i=index: calendar_rule(r, i))
             for index, raw in enumerate(items)]
    if errors:
        raise ValidationFailed("invalid calendar", errors)
    return tuple(rules)


def default_program_id(raw: Any) -> UUID:
    errors: list[FieldError] = []
    program_id = _collect(errors, "default_program_id", lambda: _uuid(raw))
    if errors:
        raise ValidationFailed("invalid calendar", errors)
    return program_id


def rule_json(rule: CalendarRule) -> dict[str, Any]:
    document: dict[str, Any] = {"id": rule.rule_id, "program_id": rule.program_id}
    if isinstance(rule.date_range, DateRange):
        document["date_range"] = {"first": rule.date_range.first.isoformat(),
                                  "last": rule.date_range.last.isoformat()}
    elif isinstance(rule.date_range, YearlyDateRange):
        document["date_range"] = {"first": "%02d-%02d" % rule.date_range.first,
                                  "last": "%02d-%02d" % rule.date_range.last}
    if rule.weekdays:
        document["weekdays"] = sorted(rule.weekdays)
    if rule.dates:
        document["dates"] = sorted(d.isoformat() for d in rule.dates)
    return document


# -- assignments and overrides ---------------------------------------------------------------

def scope(raw: Any, field: str) -> tuple[UUID | None, str | None]:
    """(group_id, district) of an assignment: exactly one of them."""
    if not isinstance(raw, Mapping):
        raise ValidationFailed("invalid scope", [FieldError(field, "must be an object")])
    given = [key for key in ("group_id", "district") if raw.get(key) is not None]
    if len(given) != 1:
        raise ValidationFailed("invalid scope", [FieldError(field, "give exactly one of group_id or district")])
    if given == ["district"]:
        return None, short_text(raw["district"], "district")
    errors: list[FieldError] = []
    group_id = _collect(errors, "group_id", lambda: _uuid(raw["group_id"]))
    if errors:
        raise ValidationFailed("invalid scope", errors)
    return group_id, None


def override_scope(raw: Any) -> OverrideScope:
    if not isinstance(raw, Mapping):
        raise ValidationFailed("invalid override", [FieldError("scope", "must be an object")])
    given = [key for key in ("district", "group_id", "device_ids") if raw.get(key) is not None]
    if len(given) != 1:
        raise ValidationFailed("invalid override", [FieldError(
            "scope", "give exactly one of district, group_id or device_ids")])
    if given == ["district"]:
        return OverrideScope(district=short_text(raw["district"], "scope.district"))
    errors: list[FieldError] = []
    if given == ["group_id"]:
        group_id = _collect(errors, "scope.group_id", lambda: _uuid(raw["group_id"]))
        if errors:
            raise ValidationFailed("invalid override", errors)
        return OverrideScope(group_id=group_id)
    ids = _collect(errors, "scope.device_ids",
                   lambda: [_uuid(d) for d in _list(raw["device_ids"], MAX_OVERRIDE_DEVICES)])
    if not errors and not ids:
        errors.append(FieldError("scope.device_ids", "must not be empty"))
    if errors:
        raise ValidationFailed("invalid override", errors)
    return OverrideScope(device_ids=tuple(dict.fromkeys(ids)))


def override_window(now: dt.datetime, starts_at: dt.datetime | None, ends_at: dt.datetime | None,
                    duration: dt.timedelta | None) -> tuple[dt.datetime, dt.datetime]:
    """[starts_at, ends_at) from an explicit end or a duration; the start defaults to now."""
    errors: list[FieldError] = []
    for field, instant in (("starts_at", starts_at), ("ends_at", ends_at)):
        if instant is not None and instant.utcoffset() is None:
            errors.append(FieldError(field, "must carry a timezone offset"))
    if (ends_at is None) == (duration is None):
        errors.append(FieldError("ends_at", "give exactly one of ends_at or duration_s"))
    if errors:
        raise ValidationFailed("invalid override", errors)
    start = starts_at or now
    end = ends_at or start + duration
    if end <= start:
        errors.append(FieldError("ends_at", "must be after starts_at"))
    elif end - start > MAX_OVERRIDE_SPAN:
        errors.append(FieldError("ends_at", "an override lasts at most 31 days; use a calendar for longer"))
    if end <= now:
        errors.append(FieldError("ends_at", "must be in the future"))
    if start - now > MAX_OVERRIDE_LEAD:
        errors.append(FieldError("starts_at", "must be within a year from now"))
    if errors:
        raise ValidationFailed("invalid override", errors)
    return start, end


def instant(value: Any, field: str, timezone: str) -> dt.datetime | None:
    """A time from a query string or body (ISO 8601); without an offset, the city's local time."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValidationFailed("invalid time", [FieldError(
                field, "must be an ISO 8601 time such as 2026-12-24T22:00 or 2026-12-24T13:00:00Z")]) from None
    if not isinstance(value, dt.datetime):
        raise ValidationFailed("invalid time", [FieldError(field, "must be a date and time")])
    if value.utcoffset() is None:
        value = value.replace(tzinfo=ZoneInfo(timezone))
    return value.astimezone(dt.UTC)


def dimming_level(value: Any, field: str = "dimming_level") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValidationFailed("invalid dimming level", [FieldError(
            field, "must be a whole percentage 0-100 (0 = off)")])
    return value


def priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -1000 <= value <= 1000:
        raise ValidationFailed("invalid priority", [FieldError("priority", "must be a whole number -1000..1000")])
    return value
