"""Typing decoded values through the object model, and the value forms the codecs share."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from fleet.objectmodel import Catalog, Reading, coerce
from fleet.objectmodel.coerce import INT64_MIN, UINT64_MAX
from protocols.lwm2m.errors import CodecError


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
