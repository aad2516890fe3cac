"""The load generator's CoAP codec agrees with aiocoap's byte for byte."""

import aiocoap
import pytest
from aiocoap.message import Direction
from aiocoap.numbers.optionnumbers import OptionNumber

from bench.coap import message
from bench.coap.message import Code, ContentFormat, Option, Type


def _aiocoap_outgoing(**kwargs) -> aiocoap.Message:
    msg = aiocoap.Message(**kwargs)
    msg.direction = Direction.OUTGOING
    return msg


def _registration_ours() -> bytes:
    options = (
        message.path_options(Option.URI_PATH, "/rd")
        + [(Option.CONTENT_FORMAT, message.uint_value(ContentFormat.LINK_FORMAT))]
        + [
            (Option.URI_QUERY, query.encode())
            for query in ("ep=bench-000001", "lt=3600", "lwm2m=1.1", "b=U")
        ]
    )
    return message.encode(
        Type.CON, Code.POST, 0x1234, b"\x01\x02\x03\x04", options, b"</3/0>,</3303/0>,</3435/0>"
    )


def _registration_aiocoap() -> bytes:
    return _aiocoap_outgoing(
        mtype=aiocoap.CON,
        code=aiocoap.POST,
        mid=0x1234,
        token=b"\x01\x02\x03\x04",
        uri_path=("rd",),
        uri_query=("ep=bench-000001", "lt=3600", "lwm2m=1.1", "b=U"),
        content_format=40,
        payload=b"</3/0>,</3303/0>,</3435/0>",
    ).encode()


def test_registration_request_matches_aiocoap():
    assert _registration_ours() == _registration_aiocoap()


def test_send_request_with_cbor_content_format_matches_aiocoap():
    ours = message.encode(
        Type.CON,
        Code.POST,
        65535,
        b"\xaa" * 8,
        [
            (Option.CONTENT_FORMAT, message.uint_value(ContentFormat.SENML_CBOR)),
            (Option.URI_PATH, b"dp"),
        ],
        bytes(range(256)) * 3,
    )
    theirs = _aiocoap_outgoing(
        mtype=aiocoap.CON,
        code=aiocoap.POST,
        mid=65535,
        token=b"\xaa" * 8,
        uri_path=("dp",),
        content_format=112,
        payload=bytes(range(256)) * 3,
    ).encode()
    assert ours == theirs


@pytest.mark.parametrize("value_length", [0, 12, 13, 268, 269, 1000])
def test_extended_length_and_delta_nibbles_match_aiocoap(value_length):
    # Option 2000 needs the two-byte delta extension, 300 the one-byte one after it.
    value = b"v" * value_length
    ours = message.encode(
        Type.NON,
        Code.PUT,
        7,
        b"",
        [(2000, value), (Option.LOCATION_PATH, b"a"), (300, b"xy")],
    )
    theirs = _aiocoap_outgoing(mtype=aiocoap.NON, code=aiocoap.PUT, mid=7)
    theirs.opt.add_option(OptionNumber(2000).create_option(decode=value))
    theirs.opt.add_option(OptionNumber(8).create_option(decode=b"a"))
    theirs.opt.add_option(OptionNumber(300).create_option(decode=b"xy"))
    assert ours == theirs.encode()


def test_decodes_what_aiocoap_encodes():
    raw = _aiocoap_outgoing(
        mtype=aiocoap.ACK,
        code=aiocoap.CREATED,
        mid=42,
        token=b"\x09",
        location_path=("rd", "x"),
        payload=b"",
    ).encode()
    decoded = message.decode(raw)
    assert (decoded.mtype, decoded.code, decoded.mid, decoded.token) == (Type.ACK, 65, 42, b"\x09")
    assert decoded.option_values(Option.LOCATION_PATH) == [b"rd", b"x"]
    assert decoded.payload == b""


def test_aiocoap_decodes_what_we_encode():
    theirs = aiocoap.Message.decode(_registration_ours())
    assert theirs.mtype == aiocoap.CON
    assert theirs.code == aiocoap.POST
    assert theirs.mid == 0x1234
    assert theirs.token == b"\x01\x02\x03\x04"
    assert theirs.opt.uri_path == ("rd",)
    assert theirs.opt.uri_query == ("ep=bench-000001", "lt=3600", "lwm2m=1.1", "b=U")
    assert theirs.opt.content_format == 40
    assert theirs.payload == b"</3/0>,</3303/0>,</3435/0>"


def test_round_trip_keeps_repeated_options_in_order():
    original = message.Message(
        Type.CON, Code.POST, 1, b"t", [(11, b"a"), (11, b"b"), (15, b"q")], b"\x00"
    )
    assert message.decode(original.encode()) == original


def test_empty_ack_header():
    assert message.encode(Type.ACK, Code.EMPTY, 0xBEEF) == b"\x60\x00\xbe\xef"
    assert message.decode(b"\x60\x00\xbe\xef") == message.Message(Type.ACK, 0, 0xBEEF)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x40\x02",  # shorter than a header
        b"\x80\x02\x00\x01",  # version 2
        b"\x49\x02\x00\x01" + b"t" * 9,  # token length 9
        b"\x42\x02\x00\x01t",  # token announced but truncated
        b"\x40\x02\x00\x01\xff",  # payload marker without payload
        b"\x40\x02\x00\x01\xf1x",  # delta nibble 15
        b"\x40\x02\x00\x01\x13ab",  # option value truncated
        b"\x40\x02\x00\x01\xd0",  # one-byte delta extension missing
        b"\x60\x00\x00\x01\xff\x00",  # empty message with a payload
    ],
)
def test_rejects_malformed(raw):
    with pytest.raises(message.MessageFormatError):
        message.decode(raw)


def test_code_text():
    assert message.code_text(Code.CHANGED) == "2.04"
    assert message.code_text(128) == "4.00"
    assert message.code_text(160) == "5.00"
