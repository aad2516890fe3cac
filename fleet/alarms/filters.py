"""Alarm list filters from query strings, and the cursors of its pages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID


from fleet import cursors
from fleet.alarms.models import OPEN_STATUSES, AlarmQuery, AlarmStatus, AlarmType, Severity
from fleet.errors import FieldError, ValidationFailed
from fleet.registry.filters import parse_filter

# Where the device is: the registry's own filters, checked by its own parser.
DEVICE_FIELDS = ("kind", "district", "bbox", "near", "radius_m", "group_id")


def parse_query(raw: Mapping[str, Any]) -> AlarmQuery:
    """Raises ValidationFailed naming every bad field at once."""
    errors: list[FieldError] = []
    try:
        device = parse_filter({k: raw.get(k) for k in DEVICE_FIELDS})
    except ValidationFailed as exc:
        errors += exc.errors
        device = None

    def one_of(name: str, allowed: tuple[str, ...]) -> str | None:
        value = raw.get(name)
        if value in (None, ""):
            return None
        if value not in allowed:
            errors.append(FieldError(name, "must be one of: " + ", ".join(allowed)))
        return value

    status = one_of("status", (*(s.value for s in AlarmStatus), "open", "all"))
    statuses = {None: OPEN_STATUSES, "open": OPEN_STATUSES,
                "all": tuple(s.value for s in AlarmStatus)}.get(status, (status,))
    severity = one_of("severity", tuple(s.value for s in Severity))
    alarm_type = one_of("type", tuple(t.value for t in AlarmType))
    shelved = one_of("shelved", ("true", "false"))
    device_id = None
    if raw.get("device") not in (None, ""):
        try:
            device_id = UUID(str(raw["device"]))
        except ValueError:
            errors.append(FieldError("device", "must be a UUID"))
    if errors or device is None:
        raise ValidationFailed("invalid alarm filter", errors)
    near = (device.near.lat, device.near.lon, device.near.radius_m) if device.near else None
    bbox = device.bbox
    return AlarmQuery(
        statuses=statuses, severity=severity, type=alarm_type, kind=device.kind.value if device.kind else None,
        district=device.district, device_id=device_id, group_id=device.group_id,
        bbox=(bbox.min_lon, bbox.min_lat, bbox.max_lon, bbox.max_lat) if bbox else None, near=near,
        shelved=None if shelved is None else shelved == "true")


def encode_cursor(key: tuple) -> str:
    return cursors.encode(b"a:", key)


def decode_cursor(cursor: str, near: bool) -> tuple:
    """(seq,) for the newest-first order, (distance, seq) for the nearest-first one."""
    key = cursors.decode(b"a:", cursor, tuple[float, int] if near else tuple[int])
    if not 0 <= key[-1] < 2**63:
        raise ValidationFailed("invalid cursor", [FieldError("cursor", "is not a cursor this API issued")])
    return key
