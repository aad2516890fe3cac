"""LwM2M CBOR (content-format 11544): nested maps keyed by path ids, and the strict CBOR reader.

A payload is a map whose keys are path ids, or arrays of consecutive path ids, and whose
values are either further such maps or the value of a resource or resource instance:
{3303: {0: {5700: 21.5}}} and {[3303, 0, 5700]: 21.5} say the same thing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from datetime import datetime

import cbor2

from fleet.objectmodel import Reading, ResourcePath
from fleet.objectmodel.models import MAX_ID
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.values import check_number, objlnk_text, seconds, storable

CONTENT_FORMAT = 11544
MAX_PAYLOAD_BYTES = 1 << 20
# Semantic tags cbor2 decodes itself (tag 1, epoch time, is left to the caller to allow):
# shared references can build cycles and others run costly parsers, so all are refused.
_BUILTIN_TAGS = (0, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
                 1004, 43000, 55799)
_EPOCH_TIME_TAG = 1


def _refuse_tag(*_args: object) -> object:
    raise CodecError("CBOR tags are not allowed here")


_REFUSE_ALL_TAGS = {tag: _refuse_tag for tag in (*_BUILTIN_TAGS, _EPOCH_TIME_TAG)}
_REFUSE_TAGS_BUT_TIME = {tag: _refuse_tag for tag in _BUILTIN_TAGS}


def loads_strict(payload: bytes, *, max_depth: int, allow_time_tag: bool = False) -> object:
    """Decode exactly one CBOR item: no trailing bytes, duplicate keys, or tags (but tag 1)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CodecError("payload is too large")
    stream = io.BytesIO(payload)
    decoder = cbor2.CBORDecoder(
        stream,
        tag_hook=_refuse_tag,
        semantic_decoders=_REFUSE_TAGS_BUT_TIME if allow_time_tag else _REFUSE_ALL_TAGS,
        max_depth=max_depth,
        allow_duplicate_keys=False,
    )
    try:
        document = decoder.decode()
    except cbor2.CBORDecodeEOF:
        raise CodecError("CBOR payload is truncated") from None
    except cbor2.CBORDecodeError as exc:
        if isinstance(exc.__cause__, CodecError):
            raise exc.__cause__ from None
        raise CodecError(f"invalid CBOR: {exc}") from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        raise CodecError("invalid CBOR") from None
    if stream.tell() != len(payload):
        raise CodecError("trailing bytes after the CBOR item")
    return document


def decode(payload: bytes, *, within: ResourcePath | None = None) -> list[Reading]:
    """Readings (without time: the format has none) of every value in the payload.

    within, normally the request path, bounds where the values may lie.
    """
    document = loads_strict(bytes(payload), max_depth=8, allow_time_tag=True)
    if type(document) is not dict:
        raise CodecError("an LwM2M CBOR payload is a map")
    readings: list[Reading] = []
    _collect(document, (), readings)
    paths = {reading.path for reading in readings}
    if len(paths) != len(readings):
        raise CodecError("a path appears twice")
    if within is not None and not all(within.contains(path) for path in paths):
        raise CodecError(f"a value lies outside {within}")
    return storable(readings)


def _collect(node: dict, prefix: tuple[int, ...], readings: list[Reading]) -> None:
    for key, child in node.items():
        ids = prefix + _key_ids(key)
        if len(ids) > 4:
            raise CodecError("a path is deeper than 4 levels")
        if type(child) is dict:
            _collect(child, ids, readings)
        elif len(ids) < 3:
            raise CodecError("a value sits above resource level")
        else:
            readings.append(Reading(ResourcePath(*ids), None, _leaf(child)))


def _key_ids(key: object) -> tuple[int, ...]:
    if type(key) is int and 0 <= key <= MAX_ID:
        return (key,)
    if type(key) is tuple and key and all(type(id_) is int and 0 <= id_ <= MAX_ID for id_ in key):
        return key
    raise CodecError("map keys must be path ids or arrays of them")


def _leaf(value: object) -> object:
    kind = type(value)
    if kind is int or kind is float:
        return check_number(value, "value")
    if kind is str or kind is bytes or kind is bool or kind is datetime:
        return value
    if value is None:
        raise CodecError("null values are not supported")
    raise CodecError("unsupported value type")


def encode(values: Iterable[tuple[ResourcePath, object]]) -> bytes:
    """A nested-map payload for (path, value) pairs at resource or resource-instance level."""
    document: dict[int, dict] = {}
    for path, value in values:
        if not path.is_resource_level:
            raise CodecError(f"{path} is not a resource path")
        node = document
        *parents, leaf = path.ids
        for part in parents:
            node = node.setdefault(part, {})
            if type(node) is not dict:
                raise CodecError(f"{path} lies below a resource that has a value")
        if leaf in node:
            raise CodecError(f"{path} is given twice or also has instances")
        node[leaf] = _wire_value(value)
    return cbor2.dumps(document)


def _wire_value(value: object) -> object:
    if isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise CodecError("values must be finite")
        return value
    if isinstance(value, datetime):
        return cbor2.CBORTag(_EPOCH_TIME_TAG, seconds(value))
    if isinstance(value, tuple):
        return objlnk_text(value)
    raise CodecError(f"cannot encode a {type(value).__name__} value")
