"""The one CoAP message codec (RFC 7252 §3): datagram bytes to and from header, token, options
and payload, for the listener's fast paths, the simulators and the load generator alike.

Small and allocation-light on purpose: the Send fast path and the outbound path decode every
datagram here, and ten thousand simulated devices share one process. Options are plain
``(number, value)`` pairs in wire order. Decoding is strict: whatever §3 calls a message
format error (version other than 1, token length 9–15, truncated token, option or extension,
reserved nibble 15, a payload marker without payload, an Empty message with anything after the
message ID) raises :class:`MessageFormatError` with a short reason fit for a diagnostic payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from operator import itemgetter

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
INTERNAL_SERVER_ERROR, SERVICE_UNAVAILABLE = 160, 163

# Options
IF_MATCH, URI_HOST, ETAG, IF_NONE_MATCH, OBSERVE, URI_PORT = 1, 3, 4, 5, 6, 7
LOCATION_PATH, URI_PATH, CONTENT_FORMAT, MAX_AGE, URI_QUERY, ACCEPT = 8, 11, 12, 14, 15, 17
LOCATION_QUERY, BLOCK2, BLOCK1, SIZE2, PROXY_URI, PROXY_SCHEME, SIZE1 = 20, 23, 27, 28, 35, 39, 60
NO_RESPONSE = 258

# Content formats LwM2M devices use
TEXT_PLAIN, LINK_FORMAT, OPAQUE = 0, 40, 42
SENML_JSON, SENML_CBOR, LWM2M_TLV, LWM2M_CBOR = 110, 112, 11542, 11544

_HEADER = struct.Struct("!BBH")
_by_number = itemgetter(0)


class MessageFormatError(ValueError):
    """The datagram is not a well-formed CoAP message (RFC 7252 §3)."""


@dataclass(slots=True)
class Message:
    mtype: int
    code: int
    mid: int
    token: bytes = b""
    options: list[tuple[int, bytes]] = field(default_factory=list)
    payload: bytes = b""

    def option(self, number: int) -> bytes | None:
        """The first value of an option, None if absent."""
        for option_number, value in self.options:
            if option_number == number:
                return value
        return None

    def option_values(self, number: int) -> list[bytes]:
        return [value for option_number, value in self.options if option_number == number]

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


def is_success(code: int) -> bool:
    return code >> 5 == 2


def is_request(code: int) -> bool:
    return 1 <= code <= 31


def uint(value: int) -> bytes:
    """An unsigned option value in the fewest bytes (0 is the empty string)."""
    if value < 0:
        raise ValueError("option uint must not be negative")
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


def encode_options(options: list[tuple[int, bytes]] | tuple) -> bytes:
    """Options sorted by number (stable, so repeated options keep their order)."""
    parts = []
    previous = 0
    for number, value in sorted(options, key=_by_number):
        delta, delta_ext = _extended(number - previous)
        length, length_ext = _extended(len(value))
        parts += (bytes(((delta << 4) | length,)), delta_ext, length_ext, value)
        previous = number
    return b"".join(parts)


def encode_with_options(mtype: int, code: int, mid: int, token: bytes, encoded_options: bytes,
                        payload: bytes = b"") -> bytes:
    """The hot-path encoder, for options already run through encode_options."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("token longer than 8 bytes")
    header = _HEADER.pack((VERSION << 6) | (mtype << 4) | len(token), code, mid)
    if payload:
        return b"".join((header, token, encoded_options, b"\xff", payload))
    return header + token + encoded_options


def encode(mtype: int, code: int, mid: int, token: bytes = b"",
           options: list[tuple[int, bytes]] | tuple = (), payload: bytes = b"") -> bytes:
    return encode_with_options(mtype, code, mid, token, encode_options(options), payload)


def empty(mtype: int, mid: int) -> bytes:
    """An empty ACK or RST."""
    return _HEADER.pack((VERSION << 6) | (mtype << 4), EMPTY, mid)


def decode_header(data: bytes) -> tuple[int, int, int, bytes]:
    """(type, code, message id, token), options unread: for who only needs to match an answer."""
    if len(data) < 4:
        raise MessageFormatError("shorter than a CoAP header")
    first, code, mid = _HEADER.unpack_from(data)
    if first >> 6 != VERSION:
        raise MessageFormatError("CoAP version must be 1")
    token_length = first & 0x0F
    if token_length > MAX_TOKEN_LENGTH:
        raise MessageFormatError("token length above 8")
    if len(data) < 4 + token_length:
        raise MessageFormatError("token cut short")
    return (first >> 4) & 0x03, code, mid, bytes(data[4:4 + token_length])


def decode(data: bytes) -> Message:
    """The message in a datagram; MessageFormatError for anything §3 calls a format error."""
    return Message(*parse(data))


def parse(data: bytes) -> tuple[int, int, int, bytes, list[tuple[int, bytes]], bytes]:
    """(type, code, message id, token, options, payload) of a datagram, as :func:`decode` but
    without the Message: for the fast paths, which look at a few fields of every datagram."""
    end = len(data)
    if end < 4:
        raise MessageFormatError("shorter than a CoAP header")
    first, code, mid = _HEADER.unpack_from(data)
    if first >> 6 != 1:
        raise MessageFormatError("CoAP version must be 1")
    position = 4 + (first & 0x0F)
    if position > 12:  # token length above 8
        raise MessageFormatError("token length above 8")
    if position > end:
        raise MessageFormatError("token cut short")
    if code == 0 and end != 4:
        raise MessageFormatError("empty message with token, options or payload")
    token = data[4:position]
    options: list[tuple[int, bytes]] = []
    number = 0
    # Written out, literals included, rather than called or looked up: this loop runs for every
    # option of every datagram the Send fast path and the outbound path take.
    while position < end:
        head = data[position]
        position += 1
        if head == 0xFF:
            if position == end:
                raise MessageFormatError("payload marker followed by no payload")
            return (first >> 4) & 0x03, code, mid, token, options, data[position:]
        delta, length = head >> 4, head & 0x0F
        if delta >= 13:
            if delta == 13:
                if position >= end:
                    raise MessageFormatError("option header cut short")
                delta = data[position] + 13
                position += 1
            elif delta == 14:
                if position + 2 > end:
                    raise MessageFormatError("option header cut short")
                delta = ((data[position] << 8) | data[position + 1]) + 269
                position += 2
            else:
                raise MessageFormatError("reserved option delta 15")
        if length >= 13:
            if length == 13:
                if position >= end:
                    raise MessageFormatError("option header cut short")
                length = data[position] + 13
                position += 1
            elif length == 14:
                if position + 2 > end:
                    raise MessageFormatError("option header cut short")
                length = ((data[position] << 8) | data[position + 1]) + 269
                position += 2
            else:
                raise MessageFormatError("reserved option length 15")
        if position + length > end:
            raise MessageFormatError("option value cut short")
        number += delta
        options.append((number, data[position:position + length]))
        position += length
    return (first >> 4) & 0x03, code, mid, token, options, b""


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
