"""The CoAP message codec (RFC 7252 §3) simulated devices speak: bytes to and from Message.

Deliberately small and allocation-light: ten thousand devices share one process, so a device
must not pay for a general-purpose CoAP stack. Options are plain (number, bytes) pairs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VERSION = 1
PAYLOAD_MARKER = 0xFF
MAX_TOKEN_LENGTH = 8

# Message types
CON, NON, ACK, RST = 0, 1, 2, 3

# Codes: class << 5 | detail
EMPTY = 0
GET, POST, PUT, DELETE = 1, 2, 3, 4
CREATED, DELETED, VALID, CHANGED, CONTENT = 65, 66, 67, 68, 69
BAD_REQUEST, BAD_OPTION, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED, NOT_ACCEPTABLE = (
    128, 130, 131, 132, 133, 134)
REQUEST_ENTITY_INCOMPLETE, UNSUPPORTED_CONTENT_FORMAT = 136, 143
INTERNAL_SERVER_ERROR = 160

# Options
IF_MATCH, URI_HOST, ETAG, IF_NONE_MATCH, OBSERVE, URI_PORT = 1, 3, 4, 5, 6, 7
LOCATION_PATH, URI_PATH, CONTENT_FORMAT, MAX_AGE, URI_QUERY, ACCEPT = 8, 11, 12, 14, 15, 17
LOCATION_QUERY, BLOCK2, BLOCK1, SIZE2, PROXY_URI, PROXY_SCHEME, SIZE1 = 20, 23, 27, 28, 35, 39, 60
NO_RESPONSE = 258
# What a device understands; an unknown critical (odd-numbered) option gets 4.02 (§5.4.1).
UNDERSTOOD_OPTIONS = frozenset({URI_HOST, OBSERVE, URI_PORT, LOCATION_PATH, URI_PATH,
                                CONTENT_FORMAT, MAX_AGE, URI_QUERY, ACCEPT, LOCATION_QUERY,
                                BLOCK2, BLOCK1, SIZE2, SIZE1, NO_RESPONSE})

_HEADER = struct.Struct("!BBH")


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

    def option(self, number: int) -> bytes | None:
        for option_number, value in self.options:
            if option_number == number:
                return value
        return None

    def uint_option(self, number: int) -> int | None:
        value = self.option(number)
        return None if value is None else int.from_bytes(value, "big")

    def strings(self, number: int) -> list[str]:
        return [value.decode("utf-8", "replace") for n, value in self.options if n == number]

    @property
    def is_request(self) -> bool:
        return 1 <= self.code <= 31

    def encode(self) -> bytes:
        return encode(self.mtype, self.code, self.mid, self.token, self.options, self.payload)


def code_text(code: int) -> str:
    """68 -> '2.04', the way CoAP people write codes."""
    return f"{code >> 5}.{code & 0x1F:02d}"


def uint(value: int) -> bytes:
    """An unsigned option value in the fewest bytes (0 is the empty string)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def path_options(number: int, path: str) -> list[tuple[int, bytes]]:
    """'/rd/x' -> one option per segment."""
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
    """Options sorted by number (stable, so repeated options keep their order)."""
    parts = []
    previous = 0
    for number, value in sorted(options, key=lambda option: option[0]):
        delta, delta_ext = _extended(number - previous)
        length, length_ext = _extended(len(value))
        parts += (bytes(((delta << 4) | length,)), delta_ext, length_ext, value)
        previous = number
    return b"".join(parts)


def encode_with_options(mtype: int, code: int, mid: int, token: bytes, encoded_options: bytes,
                        payload: bytes = b"") -> bytes:
    """The hot-path encoder, for options already run through encode_options."""
    header = _HEADER.pack((VERSION << 6) | (mtype << 4) | len(token), code, mid)
    if payload:
        return b"".join((header, token, encoded_options, b"\xff", payload))
    return header + token + encoded_options


def encode(mtype: int, code: int, mid: int, token: bytes = b"",
           options: list[tuple[int, bytes]] | tuple = (), payload: bytes = b"") -> bytes:
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("token longer than 8 bytes")
    return encode_with_options(mtype, code, mid, token, encode_options(list(options)), payload)


def empty(mtype: int, mid: int) -> bytes:
    """An empty ACK or RST."""
    return _HEADER.pack((VERSION << 6) | (mtype << 4), EMPTY, mid)


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
        return int.from_bytes(data[position:position + 2], "big") + 269, position + 2
    raise MessageFormatError("reserved option nibble 15")


def decode(data: bytes) -> Message:
    if len(data) < 4:
        raise MessageFormatError("datagram shorter than a CoAP header")
    first, code, mid = _HEADER.unpack_from(data)
    if first >> 6 != VERSION:
        raise MessageFormatError(f"unknown CoAP version {first >> 6}")
    token_length = first & 0x0F
    if token_length > MAX_TOKEN_LENGTH or len(data) < 4 + token_length:
        raise MessageFormatError("bad token length")
    mtype = (first >> 4) & 0x03
    token = bytes(data[4:4 + token_length])
    if code == EMPTY and len(data) != 4:
        raise MessageFormatError("empty message with token, options or payload")
    options: list[tuple[int, bytes]] = []
    position, end, number = 4 + token_length, len(data), 0
    while position < end:
        byte = data[position]
        if byte == PAYLOAD_MARKER:
            if position + 1 == end:
                raise MessageFormatError("payload marker followed by no payload")
            return Message(mtype, code, mid, token, options, bytes(data[position + 1:]))
        delta, position = _read_extended(byte >> 4, data, position + 1)
        length, position = _read_extended(byte & 0x0F, data, position)
        if position + length > end:
            raise MessageFormatError("option value truncated")
        number += delta
        options.append((number, bytes(data[position:position + length])))
        position += length
    return Message(mtype, code, mid, token, options, b"")


def block_option(value: bytes | None) -> tuple[int, bool, int] | None:
    """(block number, more, size) of a Block1/Block2 option value (RFC 7959 §2.2)."""
    if value is None:
        return None
    raw = int.from_bytes(value, "big")
    szx = raw & 0x07
    if szx == 7:
        raise MessageFormatError("block size exponent 7 is reserved")
    return raw >> 4, bool(raw & 0x08), 1 << (szx + 4)


def block_value(number: int, more: bool, size: int) -> bytes:
    return uint((number << 4) | (0x08 if more else 0) | (size.bit_length() - 5))
