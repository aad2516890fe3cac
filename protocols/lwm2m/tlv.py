"""OMA TLV (content-format 11542, LwM2M 1.1 TS §7.4.3): binary entries to and from (path, value).

Each entry is a type byte (what it is, id width, how its length is given), a 1- or 2-byte id,
an optional 1- to 3-byte length, then the value. Object instances hold resources, multiple
resources hold resource instances, and which one comes first depends on the request path.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from datetime import datetime

from fleet.objectmodel import Catalog, Reading, ResourcePath, ResourceType
from fleet.objectmodel.coerce import coerce_to_type, timestamp_to_datetime
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.values import storable

CONTENT_FORMAT = 11542
MAX_PAYLOAD_BYTES = 1 << 20

OBJECT_INSTANCE, RESOURCE_INSTANCE, MULTIPLE_RESOURCE, RESOURCE = 0, 1, 2, 3
_MAX_VALUE_LENGTH = (1 << 24) - 1


def decode(payload: bytes, request_path: ResourcePath) -> list[tuple[ResourcePath, bytes]]:
    """(path, raw value) for every resource value and resource instance value in the payload."""
    data = bytes(payload)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise CodecError("payload is too large")
    entries: list[tuple[ResourcePath, bytes]] = []
    depth = request_path.depth
    for kind, ident, start, end in _entries(data, 0, len(data)):
        holds_resource = kind in (RESOURCE, MULTIPLE_RESOURCE)
        if depth == 1 and kind == OBJECT_INSTANCE:
            _instance(data, request_path.child(ident), start, end, entries)
        elif depth == 2 and kind == OBJECT_INSTANCE and ident == request_path.instance:
            # Some clients wrap a single instance's resources in its object instance TLV.
            _instance(data, request_path, start, end, entries)
        elif depth == 2 and holds_resource:
            _resource(data, request_path.child(ident), kind, start, end, entries)
        elif depth == 3 and holds_resource and ident == request_path.resource:
            _resource(data, request_path, kind, start, end, entries)
        elif depth == 4 and kind == RESOURCE_INSTANCE and ident == request_path.resource_instance:
            entries.append((request_path, data[start:end]))
        else:
            raise CodecError(f"unexpected TLV entry for a request on {request_path}")
    if len({path for path, _raw in entries}) != len(entries):
        raise CodecError("a TLV path appears twice")
    return entries


def _instance(data: bytes, instance_path: ResourcePath, start: int, end: int,
              entries: list[tuple[ResourcePath, bytes]]) -> None:
    for kind, ident, value_start, value_end in _entries(data, start, end):
        if kind not in (RESOURCE, MULTIPLE_RESOURCE):
            raise CodecError("an object instance TLV may only hold resources")
        _resource(data, instance_path.child(ident), kind, value_start, value_end, entries)


def _resource(data: bytes, path: ResourcePath, kind: int, start: int, end: int,
              entries: list[tuple[ResourcePath, bytes]]) -> None:
    if kind == RESOURCE:
        entries.append((path, data[start:end]))
        return
    for inner_kind, ident, value_start, value_end in _entries(data, start, end):
        if inner_kind != RESOURCE_INSTANCE:
            raise CodecError("a multiple resource TLV may only hold resource instances")
        entries.append((path.child(ident), data[value_start:value_end]))


def _entries(data: bytes, pos: int, end: int):
    """Yield (kind, id, value start, value end) of the TLVs laid side by side in data[pos:end]."""
    while pos < end:
        type_byte = data[pos]
        id_width = 2 if type_byte & 0x20 else 1
        length_width = (type_byte >> 3) & 0x03
        header_end = pos + 1 + id_width + length_width
        if header_end > end:
            raise CodecError("truncated TLV header")
        ident = int.from_bytes(data[pos + 1 : pos + 1 + id_width], "big")
        if length_width:
            length = int.from_bytes(data[pos + 1 + id_width : header_end], "big")
        else:
            length = type_byte & 0x07
        if header_end + length > end:
            raise CodecError("TLV value runs past its container")
        yield type_byte >> 6, ident, header_end, header_end + length
        pos = header_end + length


def decode_typed(payload: bytes, request_path: ResourcePath, catalog: Catalog) -> list[Reading]:
    """Readings with values decoded by resource type; unknown resources keep their raw bytes."""
    readings = []
    for path, raw in decode(payload, request_path):
        definition = catalog.resource_at(path)
        value = raw if definition is None else decode_value(raw, definition.type)
        readings.append(Reading(path, None, value))
    return storable(readings, catalog)


def decode_value(raw: bytes, resource_type: ResourceType) -> object:
    """The Python value of one TLV value of the given LwM2M type."""
    size = len(raw)
    if resource_type in (ResourceType.INTEGER, ResourceType.TIME, ResourceType.UNSIGNED):
        if size not in (1, 2, 4, 8):
            raise CodecError(f"{resource_type} values are 1, 2, 4 or 8 bytes, not {size}")
        number = int.from_bytes(raw, "big", signed=resource_type != ResourceType.UNSIGNED)
        if resource_type == ResourceType.TIME:
            try:
                return timestamp_to_datetime(number)
            except ValueError:
                raise CodecError("time is out of range") from None
        return number
    if resource_type == ResourceType.FLOAT:
        if size not in (4, 8):
            raise CodecError(f"float values are 4 or 8 bytes, not {size}")
        number = struct.unpack(">f" if size == 4 else ">d", raw)[0]
        if not math.isfinite(number):
            raise CodecError("float value is not finite")
        return number
    if resource_type == ResourceType.BOOLEAN:
        if raw not in (b"\x00", b"\x01"):
            raise CodecError("boolean values are one byte, 0 or 1")
        return raw == b"\x01"
    if resource_type == ResourceType.OBJLNK:
        if size != 4:
            raise CodecError(f"object links are 4 bytes, not {size}")
        return (int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big"))
    if resource_type in (ResourceType.STRING, ResourceType.CORELNK):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("string value is not UTF-8") from None
    if resource_type == ResourceType.OPAQUE:
        return raw
    raise CodecError("executable resources carry no value")


def encode(values: Iterable[tuple[ResourcePath, object]], request_path: ResourcePath,
           catalog: Catalog | None = None) -> bytes:
    """The TLV payload of a write on request_path setting each (path, value) below it.

    Values are encoded by their resource's type when the catalog knows it (and checked
    against it), otherwise by their Python type.
    """
    tree: dict[int, dict[int, object]] = {}
    for path, value in values:
        if not path.is_resource_level or not request_path.contains(path):
            raise CodecError(f"{path} is not a resource below {request_path}")
        definition = catalog.resource_at(path) if catalog is not None else None
        raw = encode_value(value, definition.type if definition else None)
        resources = tree.setdefault(path.instance, {})
        if path.resource_instance is None:
            if path.resource in resources:
                raise CodecError(f"{path} is given twice or also has instances")
            resources[path.resource] = raw
        else:
            instances = resources.setdefault(path.resource, {})
            if not isinstance(instances, dict) or path.resource_instance in instances:
                raise CodecError(f"{path} is given twice or its resource also has a value")
            instances[path.resource_instance] = raw
    if request_path.depth == 4:
        return b"".join(_tlv(RESOURCE_INSTANCE, ri, raw)
                        for resources in tree.values() for instances in resources.values()
                        for ri, raw in instances.items())
    encoded = {instance: b"".join(_resource_tlv(rid, content) for rid, content in resources.items())
               for instance, resources in tree.items()}
    if request_path.depth == 1:
        return b"".join(_tlv(OBJECT_INSTANCE, instance, body) for instance, body in encoded.items())
    return b"".join(encoded.values())


def _resource_tlv(resource_id: int, content: object) -> bytes:
    if isinstance(content, dict):
        body = b"".join(_tlv(RESOURCE_INSTANCE, ri, raw) for ri, raw in content.items())
        return _tlv(MULTIPLE_RESOURCE, resource_id, body)
    return _tlv(RESOURCE, resource_id, content)


def _tlv(kind: int, ident: int, value: bytes) -> bytes:
    type_byte = kind << 6
    if ident > 0xFF:
        type_byte |= 0x20
    length = len(value)
    if length > _MAX_VALUE_LENGTH:
        raise CodecError("TLV value is longer than 16 MiB")
    if length < 8:
        type_byte |= length
        length_bytes = b""
    else:
        width = 1 if length <= 0xFF else 2 if length <= 0xFFFF else 3
        type_byte |= width << 3
        length_bytes = length.to_bytes(width, "big")
    ident_bytes = ident.to_bytes(2 if ident > 0xFF else 1, "big")
    return bytes([type_byte]) + ident_bytes + length_bytes + value


def encode_value(value: object, resource_type: ResourceType | None = None) -> bytes:
    """One value's TLV bytes, by resource type when known, else by Python type."""
    if resource_type is None:
        resource_type = _type_of(value)
    try:
        value = coerce_to_type(resource_type, value)
    except ValueError as exc:
        raise CodecError(str(exc)) from None
    if resource_type in (ResourceType.INTEGER, ResourceType.TIME, ResourceType.UNSIGNED):
        # TLV times are whole seconds; a sub-second part is dropped, not rounded up.
        number = math.floor(value.timestamp()) if isinstance(value, datetime) else value
        signed = resource_type != ResourceType.UNSIGNED
        for width in (1, 2, 4, 8):
            try:
                return number.to_bytes(width, "big", signed=signed)
            except OverflowError:
                continue
        raise CodecError("integer does not fit in 8 bytes")
    if resource_type == ResourceType.FLOAT:
        return struct.pack(">d", value)
    if resource_type == ResourceType.BOOLEAN:
        return b"\x01" if value else b"\x00"
    if resource_type == ResourceType.OBJLNK:
        object_id, instance_id = value
        return object_id.to_bytes(2, "big") + instance_id.to_bytes(2, "big")
    if resource_type in (ResourceType.STRING, ResourceType.CORELNK):
        return value.encode("utf-8")
    return value


def _type_of(value: object) -> ResourceType:
    if isinstance(value, bool):
        return ResourceType.BOOLEAN
    if isinstance(value, int):
        return ResourceType.INTEGER
    if isinstance(value, float):
        return ResourceType.FLOAT
    if isinstance(value, str):
        return ResourceType.STRING
    if isinstance(value, bytes | bytearray):
        return ResourceType.OPAQUE
    if isinstance(value, datetime):
        return ResourceType.TIME
    if isinstance(value, tuple):
        return ResourceType.OBJLNK
    raise CodecError(f"cannot encode a {type(value).__name__} value")
