"""Minimal RFC 7252 message codec: header, token, options and payload, nothing more.

It exists so the load generator can build and parse datagrams without aiocoap's per-message
object overhead. Options are plain ``(number, value_bytes)`` pairs; the hot path encodes a
request's options once and then only varies message id, token and payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 1
PAYLOAD_MARKER = 0xFF
MAX_TOKEN_LENGTH = 8

_HEADER = struct.Struct("!BBH")


class Type(IntEnum):
    CON = 0
    NON = 1
    ACK = 2
    RST = 3


class Code(IntEnum):
    """The codes the measuring tools use; any other code still decodes as a plain int."""

    EMPTY = 0
    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4
    CREATED = 65  # 2.01
    DELETED = 66  # 2.02
    CHANGED = 68  # 2.04
    CONTENT = 69  # 2.05


class Option(IntEnum):
    LOCATION_PATH = 8
    URI_PATH = 11
    CONTENT_FORMAT = 12
    URI_QUERY = 15


class ContentFormat(IntEnum):
    LINK_FORMAT = 40
    SENML_JSON = 110
    SENML_CBOR = 112


class MessageFormatError(ValueError):
    """The datagram is not a well-formed CoAP message."""


@dataclass(slots=True)
class Message:
    mtype: int
    code: int
    mid: int
    token: bytes = b""
    options: list[tuple[int, bytes]] = field(default_factory=list)
    payload: bytes = b""

    def option_values(self, number: int) -> list[bytes]:
        return [value for option_number, value in self.options if option_number == number]

    def encode(self) -> bytes:
        return encode(self.mtype, self.code, self.mid, self.token, self.options, self.payload)


def code_text(code: int) -> str:
    """Render a code the way CoAP people write it: 68 -> '2.04'."""
    return f"{code >> 5}.{code & 0x1F:02d}"


def is_success(code: int) -> bool:
    return code >> 5 == 2


def is_request(code: int) -> bool:
    return 1 <= code <= 31


def is_response(code: int) -> bool:
    return code >= 64


def uint_value(value: int) -> bytes:
    """Encode an unsigned integer option value in the fewest bytes (0 is the empty string)."""
    if value < 0:
        raise ValueError("option uint must not be negative")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def path_options(number: int, path: str) -> list[tuple[int, bytes]]:
    """Split '/rd/x' or 'rd/x' into one option per segment."""
    return [(number, segment.encode()) for segment in path.strip("/").split("/") if segment]


def _extended(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    if value < 65805:
        return 14, (value - 269).to_bytes(2, "big")
    raise ValueError(f"option delta or length {value} too large")


def encode_options(options: list[tuple[int, bytes]]) -> bytes:
    """Encode options; they are sorted by number, keeping the order of repeated options."""
    parts = []
    previous = 0
    for number, value in sorted(options, key=lambda option: option[0]):
        delta, delta_ext = _extended(number - previous)
        length, length_ext = _extended(len(value))
        parts.append(bytes(((delta << 4) | length,)))
        parts.append(delta_ext)
        parts.append(length_ext)
        parts.append(value)
        previous = number
    return b"".join(parts)


def encode_with_options(
    mtype: int, code: int, mid: int, token: bytes, encoded_options: bytes, payload: bytes = b""
) -> bytes:
    """The hot-path encoder: options already run through :func:`encode_options`."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("token longer than 8 bytes")
    header = _HEADER.pack((VERSION << 6) | (mtype << 4) | len(token), code, mid)
    if payload:
        return b"".join((header, token, encoded_options, b"\xff", payload))
    return b"".join((header, token, encoded_options))


def encode(
    mtype: int,
    code: int,
    mid: int,
    token: bytes = b"",
    options: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    payload: bytes = b"",
) -> bytes:
    return encode_with_options(mtype, code, mid, token, encode_options(list(options)), payload)


def decode_header(data: bytes) -> tuple[int, int, int, bytes]:
    """Return (type, code, message id, token) without touching options; for the hot path."""
    if len(data) < 4:
        raise MessageFormatError("datagram shorter than a CoAP header")
    first, code, mid = _HEADER.unpack_from(data)
    if first >> 6 != VERSION:
        raise MessageFormatError(f"unknown CoAP version {first >> 6}")
    token_length = first & 0x0F
    if token_length > MAX_TOKEN_LENGTH or len(data) < 4 + token_length:
        raise MessageFormatError("bad token length")
    return (first >> 4) & 0x03, code, mid, data[4 : 4 + token_length]


def _read_extended(nibble: int, data: bytes, position: int) -> tuple[int, int]:
    if nibble < 13:
        return nibble, position
    if nibble == 13:
        if position + 1 > len(data):
            raise MessageFormatError("option header truncated")
        return data[position] + 13, position + 1
    if nibble == 14:
        if position + 2 > len(data):
            raise MessageFormatError("option header truncated")
        return int.from_bytes(data[position : position + 2], "big") + 269, position + 2
    raise MessageFormatError("reserved option nibble 15")


def decode(data: bytes) -> Message:
    mtype, code, mid, token = decode_header(data)
    if code == Code.EMPTY and len(data) != 4:
        raise MessageFormatError("empty message with token, options or payload")
    options: list[tuple[int, bytes]] = []
    position = 4 + len(token)
    number = 0
    end = len(data)
    while position < end:
        byte = data[position]
        if byte == PAYLOAD_MARKER:
            if position + 1 == end:
                raise MessageFormatError("payload marker followed by no payload")
            return Message(mtype, code, mid, token, options, data[position + 1 :])
        delta, position = _read_extended(byte >> 4, data, position + 1)
        length, position = _read_extended(byte & 0x0F, data, position)
        if position + length > end:
            raise MessageFormatError("option value truncated")
        number += delta
        options.append((number, data[position : position + length]))
        position += length
    return Message(mtype, code, mid, token, options, b"")
