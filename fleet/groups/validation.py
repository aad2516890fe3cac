"""Turning raw group input (name, description, saved filter, device ids) into validated values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from uuid import UUID

from fleet.errors import FieldError, ValidationFailed
from fleet.groups.models import GroupChanges, NewGroup
from fleet.registry.filters import parse_filter
from fleet.registry.models import DeviceFilter

NAME_LIMIT = 200
DESCRIPTION_LIMIT = 2000
MAX_DEVICE_IDS = 10_000
FILTER_TEXT_FIELDS = ("district", "tag", "firmware")
# Line breaks and tabs are fine in a description; other control characters are not (and
# PostgreSQL cannot store NUL in text or jsonb at all).
DESCRIPTION_WHITESPACE = frozenset("\n\r\t")


class _Invalid(Exception):
    pass


def _has_control(text: str, allowed: frozenset[str] = frozenset()) -> bool:
    return any((ord(c) < 32 or c == "\x7f") and c not in allowed for c in text)


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("must be a string")
    value = value.strip()
    if not value:
        raise _Invalid("must not be empty")
    if len(value) > NAME_LIMIT:
        raise _Invalid(f"at most {NAME_LIMIT} characters")
    if _has_control(value):
        raise _Invalid("must not contain control characters")
    return value


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Invalid("must be a string")
    value = value.strip()
    if len(value) > DESCRIPTION_LIMIT:
        raise _Invalid(f"at most {DESCRIPTION_LIMIT} characters")
    if _has_control(value, DESCRIPTION_WHITESPACE):
        raise _Invalid("must not contain control characters other than line breaks and tabs")
    return value


def _text_errors(raw: Mapping[str, Any], prefix: str) -> list[FieldError]:
    return [FieldError(f"{prefix}{name}", "must not contain control characters")
            for name in FILTER_TEXT_FIELDS
            if isinstance(raw.get(name), str) and _has_control(raw[name])]


def saved_filter(raw: Any) -> DeviceFilter:
    """The filter a dynamic group saves: at least one condition, and no reference to a group."""
    if not isinstance(raw, Mapping):
        raise ValidationFailed("invalid group filter", [FieldError("filter", "must be an object")])
    errors = _text_errors(raw, "filter.")
    if "group_id" in raw:
        errors.append(FieldError("filter.group_id", "a group's filter may not reference another group"))
    checked = {k: v for k, v in raw.items()
               if k != "group_id" and f"filter.{k}" not in {e.field for e in errors}}
    parsed = DeviceFilter()
    try:
        parsed = parse_filter(checked, allow_group=False)
    except ValidationFailed as exc:
        errors += [FieldError(f"filter.{e.field}", e.message) for e in exc.errors]
    if not errors and parsed.is_empty():
        errors.append(FieldError("filter", "needs at least one condition; an empty filter would "
                                           "match every device in the city"))
    if errors:
        raise ValidationFailed("invalid group filter", errors)
    return parsed


def device_ids(value: Any, *, required: bool = False) -> tuple[UUID, ...]:
    """Device ids in the order given, without repeats."""
    if not isinstance(value, list | tuple):
        raise ValidationFailed("invalid device ids", [FieldError("device_ids", "must be a list of device ids")])
    if required and not value:
        raise ValidationFailed("invalid device ids", [FieldError("device_ids", "must not be empty")])
    if len(value) > MAX_DEVICE_IDS:
        raise ValidationFailed("invalid device ids", [FieldError(
            "device_ids", f"at most {MAX_DEVICE_IDS} per request")])
    ids: dict[UUID, None] = {}
    errors = []
    for index, item in enumerate(value):
        try:
            ids[item if isinstance(item, UUID) else UUID(str(item))] = None
        except ValueError:
            errors.append(FieldError(f"device_ids[{index}]", "must be a UUID"))
    if errors:
        raise ValidationFailed("invalid device ids", errors)
    return tuple(ids)


def validate_new_group(raw: Mapping[str, Any]) -> NewGroup:
    """Validate a whole new group; raises ValidationFailed naming every bad field."""
    errors = [FieldError(k, "is not a group field")
              for k in raw if k not in ("name", "description", "filter", "device_ids")]
    values: dict[str, Any] = {}
    for name, parse in (("name", _name), ("description", _description)):
        try:
            values[name] = parse(raw.get(name))
        except _Invalid as exc:
            errors.append(FieldError(name, "is required" if raw.get(name) is None else str(exc)))
    if raw.get("filter") is not None and raw.get("device_ids") is not None:
        errors += [FieldError("filter", "cannot be combined with device_ids"),
                   FieldError("device_ids", "cannot be combined with filter: a group has either "
                                            "static members or a saved filter")]
    else:
        for name, parse in (("filter", saved_filter), ("device_ids", device_ids)):
            if raw.get(name) is not None:
                try:
                    values[name] = parse(raw[name])
                except ValidationFailed as exc:
                    errors += exc.errors
    if errors:
        raise ValidationFailed("invalid group", errors)
    return NewGroup(**values)


def validate_group_changes(raw: Mapping[str, Any]) -> GroupChanges:
    """Validate a partial update; `filter: None` turns a dynamic group into an empty static one."""
    errors = [FieldError(k, "members are added and removed on their own" if k == "device_ids"
                         else "is not a group field")
              for k in raw if k not in ("name", "description", "filter")]
    changes: dict[str, Any] = {}
    for name, parse in (("name", _name), ("description", _description)):
        if name in raw:
            try:
                changes[name] = parse(raw[name])
            except _Invalid as exc:
                errors.append(FieldError(name, "must not be empty" if raw[name] is None else str(exc)))
    if "filter" in raw:
        changes["filter_set"] = True
        if raw["filter"] is not None:
            try:
                changes["filter"] = saved_filter(raw["filter"])
            except ValidationFailed as exc:
                errors += exc.errors
    if errors:
        raise ValidationFailed("invalid group update", errors)
    return GroupChanges(**changes)


def member_filter(group_id: UUID, raw: Mapping[str, Any]) -> DeviceFilter:
    """Device filters (from a query string) narrowing the members of one group."""
    errors = _text_errors(raw, "")
    if errors:
        raise ValidationFailed("invalid device filter", errors)
    return replace(parse_filter(raw, allow_group=False), group_id=group_id)
