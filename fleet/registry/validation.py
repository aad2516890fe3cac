"""Turning raw device fields (from JSON, CSV or GeoJSON) into validated values, naming every bad field."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any

from fleet.errors import FieldError, ValidationFailed
from fleet.registry.models import (ALL_KIND_ATTRIBUTES, KIND_ATTRIBUTES, OPERATOR_STATUSES,
                                   DeviceKind, DeviceStatus, LampType, NewDevice, WasteKind,
                                   WifiBand)

# LwM2M endpoint names are often URNs (urn:imei:..., urn:dev:mac:...).
ENDPOINT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}$")
TAG_PATTERN = re.compile(r"^[\w.:\-]{1,64}$")
MAX_TAGS = 32
TEXT_LIMITS = {"serial": 64, "manufacturer": 100, "model": 100, "firmware_version": 64,
               "district": 100, "address": 300, "pole_number": 50}


class _Invalid(Exception):
    pass


def _text(name: str) -> Callable[[Any], str | None]:
    limit = TEXT_LIMITS[name]

    def parse(value: Any) -> str | None:
        if not isinstance(value, str):
            raise _Invalid("must be a string")
        value = value.strip()
        if len(value) > limit:
            raise _Invalid(f"at most {limit} characters")
        if any(ord(c) < 32 for c in value):
            raise _Invalid("must not contain control characters")
        return value or None
    return parse


def _number(low: float, high: float, *, integer: bool = False) -> Callable[[Any], float | int]:
    def parse(value: Any) -> float | int:
        if isinstance(value, bool):
            raise _Invalid("must be a number")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise _Invalid("must be a number") from None
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise _Invalid("must be a finite number")
        if integer:
            if value != int(value):
                raise _Invalid("must be a whole number")
            value = int(value)
        if not low <= value <= high:
            raise _Invalid(f"must be between {low:g} and {high:g}")
        return value
    return parse


def _enum(enum_type: type) -> Callable[[Any], Any]:
    allowed = ", ".join(m.value for m in enum_type)

    def parse(value: Any) -> Any:
        try:
            return enum_type(value.strip() if isinstance(value, str) else value)
        except ValueError:
            raise _Invalid(f"must be one of: {allowed}") from None
    return parse


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time(), UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = (datetime.combine(date.fromisoformat(text), time(), UTC) if len(text) == 10
                      else datetime.fromisoformat(text))
        except ValueError:
            raise _Invalid("must be an ISO 8601 date or date-time") from None
    else:
        raise _Invalid("must be an ISO 8601 date or date-time")
    # A date-time without an offset is read as UTC rather than rejected: spreadsheets drop offsets.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _endpoint(value: Any) -> str:
    if not isinstance(value, str) or not ENDPOINT_PATTERN.match(value.strip()):
        raise _Invalid("1-128 characters: letters, digits and . _ : @ + -, starting with a letter or digit")
    return value.strip()


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        # CSV cells carry tags separated by ';' or '|'.
        value = [t for t in re.split(r"[;|]", value) if t.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise _Invalid("must be a list of strings")
    tags = tuple(dict.fromkeys(t.strip() for t in value))
    if len(tags) > MAX_TAGS:
        raise _Invalid(f"at most {MAX_TAGS} tags")
    for tag in tags:
        if not TAG_PATTERN.match(tag):
            raise _Invalid(f"tag {tag[:70]!r} must be 1-64 letters, digits or . _ : -")
    return tags


def _ssid(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value.encode()) <= 32:
        raise _Invalid("must be 1-32 bytes")
    return value


ATTRIBUTE_PARSERS: dict[str, Callable[[Any], Any]] = {
    "nominal_wattage": _number(1, 5000),
    "pole_number": _text("pole_number"),
    "lamp_type": _enum(LampType),
    "capacity_litres": _number(1, 100_000, integer=True),
    "waste_kind": _enum(WasteKind),
    "ssid": _ssid,
    "band": _enum(WifiBand),
}

FIELD_PARSERS: dict[str, Callable[[Any], Any]] = {
    "serial": _text("serial"), "manufacturer": _text("manufacturer"), "model": _text("model"),
    "firmware_version": _text("firmware_version"), "district": _text("district"),
    "address": _text("address"), "installed_at": _timestamp, "tags": _tags,
    "lat": _number(-90, 90), "lon": _number(-180, 180),
}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _operator_status(value: Any) -> DeviceStatus:
    status = _enum(DeviceStatus)(value)
    if status not in OPERATOR_STATUSES:
        raise _Invalid("may only be set to provisioned or maintenance; the network sets online and "
                       "offline, and DELETE decommissions")
    return status


def parse_fields(raw: Mapping[str, Any], kind: DeviceKind, row: int | None = None,
                 ) -> tuple[dict[str, Any], dict[str, Any], list[FieldError]]:
    """Parse every known field present in `raw`; returns (fields, kind attributes, errors)."""
    fields: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    errors: list[FieldError] = []
    allowed_attributes = KIND_ATTRIBUTES[kind]
    for name, value in raw.items():
        try:
            if name in FIELD_PARSERS:
                fields[name] = None if _blank(value) else FIELD_PARSERS[name](value)
            elif name == "status":
                if not _blank(value):
                    fields[name] = _operator_status(value)
            elif name in ALL_KIND_ATTRIBUTES:
                if name not in allowed_attributes:
                    if not _blank(value):
                        raise _Invalid(f"is not an attribute of a {kind.value}")
                    continue
                attributes[name] = None if _blank(value) else ATTRIBUTE_PARSERS[name](value)
        except _Invalid as exc:
            errors.append(FieldError(name, str(exc), row))
    return fields, attributes, errors


def validate_new_device(raw: Mapping[str, Any], row: int | None = None) -> NewDevice:
    """Validate a whole new device; raises ValidationFailed listing every bad field."""
    errors: list[FieldError] = []
    kind = endpoint = None
    try:
        kind = _enum(DeviceKind)(raw.get("kind"))
    except _Invalid as exc:
        errors.append(FieldError("kind", "is required" if _blank(raw.get("kind")) else str(exc), row))
    try:
        endpoint = _endpoint(raw.get("endpoint"))
    except _Invalid as exc:
        errors.append(FieldError("endpoint", "is required" if _blank(raw.get("endpoint")) else str(exc), row))
    for name in ("lat", "lon"):
        if _blank(raw.get(name)):
            errors.append(FieldError(name, "is required", row))
    fields, attributes = {}, {}
    if kind is not None:
        fields, attributes, field_errors = parse_fields(raw, kind, row)
        errors.extend(e for e in field_errors if not any(
            e.field == other.field and e.row == other.row for other in errors))
    if errors:
        raise ValidationFailed("invalid device", errors)
    fields.setdefault("status", DeviceStatus.PROVISIONED)
    fields["tags"] = fields.get("tags") or ()
    return NewDevice(kind=kind, endpoint=endpoint,
                     attributes={k: v for k, v in attributes.items() if v is not None}, **fields)


def validate_changes(raw: Mapping[str, Any], kind: DeviceKind) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a partial update; returns (changed fields, changed kind attributes)."""
    errors = [FieldError(name, "cannot be changed") for name in ("kind", "endpoint") if name in raw]
    errors += [FieldError(name, "is required" if name in ("lat", "lon") else "must not be empty")
               for name in ("lat", "lon", "status") if name in raw and _blank(raw[name])]
    fields, attributes, field_errors = parse_fields(raw, kind)
    errors += field_errors
    if errors:
        raise ValidationFailed("invalid device update", errors)
    if "tags" in fields and fields["tags"] is None:
        fields["tags"] = ()
    return fields, attributes
