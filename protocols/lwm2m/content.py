"""Decoding any LwM2M payload (read response, notification, Send) by its content format.

Every decoder refuses, with a CodecError, values PostgreSQL could not store (see
values.storable): a Send gets 4.00, a read or notification fails before anything is kept.
"""

from __future__ import annotations

from datetime import datetime

from fleet.objectmodel import CATALOG, Reading, ResourcePath, ResourceType, coerce, parse_objlnk
from protocols.lwm2m import lwm2m_cbor, senml, tlv
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.values import storable

TEXT_PLAIN = 0
OPAQUE = 42
SENML_JSON = senml.JSON_CONTENT_FORMAT
SENML_CBOR = senml.CBOR_CONTENT_FORMAT
LWM2M_TLV = 11542
LWM2M_CBOR = 11544
# The formats a device may use to report data to us.
SEND_FORMATS = (SENML_JSON, SENML_CBOR)


def decode(content_format: int | None, payload: bytes, request_path: ResourcePath,
           now: datetime) -> list[Reading]:
    if content_format == SENML_CBOR:
        return senml.decode_cbor(payload, now=now)
    if content_format == SENML_JSON:
        return senml.decode_json(payload, now=now)
    if content_format == LWM2M_TLV:
        return tlv.decode_typed(payload, request_path, CATALOG)
    if content_format == LWM2M_CBOR:
        return lwm2m_cbor.decode(payload, within=request_path)
    if content_format in (TEXT_PLAIN, OPAQUE, None):
        return storable([_single(content_format, payload, request_path)])
    raise CodecError(f"unsupported content format {content_format}")


def _single(content_format: int | None, payload: bytes, path: ResourcePath) -> Reading:
    """Plain text and opaque carry one resource's value; its type comes from the catalog."""
    if not path.is_resource_level:
        raise CodecError("plain text or opaque needs a resource path")
    if content_format == OPAQUE:
        return Reading(path, None, bytes(payload))
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("text/plain payload is not UTF-8") from None
    definition = CATALOG.resource_at(path)
    if definition is None:
        return Reading(path, None, text)
    try:
        return Reading(path, None, coerce(definition, _plain_text_value(definition.type, text)))
    except ValueError as exc:
        raise CodecError(f"{path}: {exc}") from None


def _plain_text_value(resource_type: ResourceType, text: str) -> object:
    """LwM2M TS §7.4.1: numbers as decimal text, booleans as 0/1, time as Unix seconds."""
    text = text.strip()
    if resource_type in (ResourceType.INTEGER, ResourceType.UNSIGNED, ResourceType.TIME):
        return int(text)
    if resource_type is ResourceType.FLOAT:
        return float(text)
    if resource_type is ResourceType.BOOLEAN:
        if text not in ("0", "1"):
            raise ValueError("a boolean is 0 or 1")
        return text == "1"
    if resource_type is ResourceType.OBJLNK:
        return parse_objlnk(text)
    return text
