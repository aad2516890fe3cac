"""Turning a raw decoded value into the Python type its LwM2M resource definition calls for."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

from fleet.objectmodel.models import MAX_ID, ResourceDef, ResourceType

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1


def coerce(resource: ResourceDef, raw: object) -> object:
    """Return raw as the resource's type (int, float, str, bool, bytes, UTC datetime, objlnk tuple).

    Raises ValueError when raw cannot stand for a value of that type; integral floats are
    accepted for integers because SenML carries every number as "v".
    """
    return _CONVERTERS[resource.type](raw)


def coerce_to_type(resource_type: ResourceType, raw: object) -> object:
    """coerce for a bare type, when there is no resource definition (e.g. unknown resources)."""
    return _CONVERTERS[resource_type](raw)


def parse_objlnk(text: str) -> tuple[int, int]:
    """Parse the "object:instance" text form that SenML and LwM2M CBOR use for object links."""
    object_id, sep, instance_id = text.partition(":")
    if not sep:
        raise ValueError("an object link is written 'object:instance'")
    link = []
    for part in (object_id, instance_id):
        if not (0 < len(part) <= 5 and part.isascii() and part.isdigit()):
            raise ValueError("object link ids are decimal numbers")
        link.append(int(part))
    return _to_objlnk(tuple(link))


def timestamp_to_datetime(seconds: float) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError("time is out of range") from None


def _to_integer(raw: object) -> int:
    value = _integral(raw)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("integer is outside the signed 64-bit range")
    return value


def _to_unsigned(raw: object) -> int:
    value = _integral(raw)
    if not 0 <= value <= UINT64_MAX:
        raise ValueError("unsigned integer is outside 0..2**64-1")
    return value


def _integral(raw: object) -> int:
    if type(raw) is int:
        return raw
    if type(raw) is float and math.isfinite(raw) and raw.is_integer():
        return int(raw)
    raise ValueError("expected an integer")


def _to_float(raw: object) -> float:
    if type(raw) is float:
        value = raw
    elif type(raw) is int:
        try:
            value = float(raw)
        except OverflowError:
            raise ValueError("number is too large for a float") from None
    else:
        raise ValueError("expected a number")
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _to_boolean(raw: object) -> bool:
    if type(raw) is not bool:
        raise ValueError("expected a boolean")
    return raw


def _to_string(raw: object) -> str:
    if type(raw) is not str:
        raise ValueError("expected a string")
    return raw


def _to_opaque(raw: object) -> bytes:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ValueError("expected bytes")
    return bytes(raw)


def _to_time(raw: object) -> datetime:
    if isinstance(raw, datetime):
        if raw.tzinfo is None:
            raise ValueError("time must carry a timezone")
        return raw.astimezone(UTC)
    if type(raw) is int or (type(raw) is float and math.isfinite(raw)):
        return timestamp_to_datetime(raw)
    raise ValueError("expected a time")


def _to_objlnk(raw: object) -> tuple[int, int]:
    if isinstance(raw, str):
        return parse_objlnk(raw)
    if (
        isinstance(raw, tuple | list)
        and len(raw) == 2
        and all(type(part) is int and 0 <= part <= MAX_ID for part in raw)
    ):
        return (raw[0], raw[1])
    raise ValueError("expected an object link (object, instance)")


def _to_none(raw: object) -> object:
    raise ValueError("executable resources carry no value")


_CONVERTERS: dict[ResourceType, Callable[[object], object]] = {
    ResourceType.STRING: _to_string,
    ResourceType.INTEGER: _to_integer,
    ResourceType.UNSIGNED: _to_unsigned,
    ResourceType.FLOAT: _to_float,
    ResourceType.BOOLEAN: _to_boolean,
    ResourceType.OPAQUE: _to_opaque,
    ResourceType.TIME: _to_time,
    ResourceType.OBJLNK: _to_objlnk,
    ResourceType.CORELNK: _to_string,
    ResourceType.NONE: _to_none,
}
