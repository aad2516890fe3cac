"""Typing decoded values through the object model, the checks that keep unstorable values out,
and the value forms the codecs share."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from fleet import objectmodel
from fleet.objectmodel import Catalog, Reading, ResourcePath, ResourceType, coerce
from fleet.objectmodel.coerce import INT64_MAX, INT64_MIN, UINT64_MAX
from protocols.lwm2m.errors import CodecError

# The longest string value a device may report, in UTF-8 bytes: far above any LwM2M string
# resource (model numbers, firmware versions, error texts), far below what would hurt a batch.
MAX_STRING_BYTES = 4096


def typed(readings: Iterable[Reading], catalog: Catalog) -> list[Reading]:
    """Readings with each value converted to its resource's type.

    Resources the catalog does not know keep the type they arrived with: a device running a
    newer object version must not have its whole report refused for one unknown resource.
    """
    result = []
    for reading in readings:
        path = reading.path
        definition = catalog.resource_at(path)
        if definition is None:
            result.append(reading)
            continue
        try:
            value = coerce(definition, reading.value)
        except ValueError as exc:
            raise CodecError(f"{path}: {exc}") from None
        result.append(reading if value is reading.value else reading._replace(value=value))
    return result


def storable(readings: list[Reading], catalog: Catalog | None = None) -> list[Reading]:
    """The readings, if PostgreSQL can store every value as it is; else CodecError for the first.

    One device's bad value must be refused here, with a diagnostic, before it joins a group
    commit whose failure would fail every other device's points in it too.
    """
    for reading in readings:
        value = reading.value
        kind = type(value)
        if kind is str:
            check_text(value, str(reading.path))
        elif kind is float:
            if not math.isfinite(value):
                raise CodecError(f"{reading.path}: value is not a finite number")
        elif kind is int and not INT64_MIN <= value <= INT64_MAX:
            check_integer(value, reading.path, catalog)
    return readings


def check_text(value: str, what: str) -> str:
    """A string PostgreSQL can store: no NUL, valid UTF-8, at most MAX_STRING_BYTES long."""
    # Four UTF-8 bytes per character at most: only long strings need encoding to measure.
    if len(value) > MAX_STRING_BYTES // 4 and len(value.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES:
        raise CodecError(f"{what}: string is longer than {MAX_STRING_BYTES} bytes")
    if "\x00" in value:
        raise CodecError(f"{what}: string contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CodecError(f"{what}: string is not valid Unicode") from None
    return value


def check_integer(value: int, path: ResourcePath, catalog: Catalog | None = None) -> int:
    """An integer within LwM2M's ranges: signed 64-bit, or unsigned 64-bit for Unsigned
    Integer resources (and for resources the catalog does not know, which may be either)."""
    if not INT64_MIN <= value <= UINT64_MAX:
        raise CodecError(f"{path}: integer is outside the 64-bit range")
    if value > INT64_MAX:
        definition = (catalog or objectmodel.CATALOG).resource_at(path)
        if definition is not None and definition.type is not ResourceType.UNSIGNED:
            raise CodecError(f"{path}: integer is outside the signed 64-bit range")
    return value


def check_number(value: object, what: str) -> int | float:
    """Accept an int within LwM2M's 64-bit ranges or a finite float; refuse bools and the rest."""
    if type(value) is float:
        if not math.isfinite(value):
            raise CodecError(f"{what} is not a finite number")
        return value
    if type(value) is int:
        if not INT64_MIN <= value <= UINT64_MAX:
            raise CodecError(f"{what} is out of the 64-bit range")
        return value
    raise CodecError(f"{what} is not a number")


def seconds(moment: datetime) -> int | float:
    """A timezone-aware datetime as Unix seconds, an int when it falls on a whole second."""
    if moment.tzinfo is None:
        raise CodecError("times to encode must carry a timezone")
    value = moment.timestamp()
    return int(value) if value.is_integer() else value


def objlnk_text(link: object) -> str:
    """An (object, instance) link in the "object:instance" form SenML and LwM2M CBOR use."""
    if (
        not isinstance(link, tuple)
        or len(link) != 2
        or not all(type(part) is int and 0 <= part <= 65535 for part in link)
    ):
        raise CodecError("object links are (object, instance) tuples of ids")
    return f"{link[0]}:{link[1]}"
