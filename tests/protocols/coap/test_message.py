"""The one CoAP message codec agrees with aiocoap byte for byte and refuses what RFC 7252 §3
calls a message format error."""

import aiocoap
import pytest
from aiocoap.message import Direction
from aiocoap.numbers.optionnumbers import OptionNumber

from protocols.coap import message


def _aiocoap_outgoing(**kwargs) -> aiocoap.Message:
    msg = aiocoap.Message(**kwargs)
    msg.direction = Direction.OUTGOING
    return msg


def _registration_ours() -> bytes:
    options = (
        message.path_options(message.URI_PATH, "/rd")
        + [(message.CONTENT_FORMAT, message.uint(message.LINK_FORMAT))]
        + [
            (message.URI_QUERY, query.encode())
            for query in ("ep=bench-000001", "lt=3600", "lwm2m=1.1", "b=U")
        ]
    )
    return message.encode(
        message.CON, message.POST, 0x1234, b"\x01\x02\x03\x04", options, b"</3/0>,</3303/0>,</3435/0>"
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
        message.CON,
        message.POST,
        65535,
        b"\xaa" * 8,
        [
            (message.CONTENT_FORMAT, message.uint(message.SENML_CBOR)),
            (message.URI_PATH, b"dp"),
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
        message.NON,
        message.PUT,
        7,
        b"",
        [(2000, value), (message.LOCATION_PATH, b"a"), (300, b"xy")],
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
    assert (decoded.mtype, decoded.code, decoded.mid, decoded.token) == (message.ACK, 65, 42, b"\x09")
    assert decoded.option_values(message.LOCATION_PATH) == [b"rd", b"x"]
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
        message.CON, message.POST, 1, b"t", [(11, b"a"), (11, b"b"), (15, b"q")], b"\x00"
    )
    assert message.decode(original.encode()) == original


def test_empty_ack_header():
    assert message.encode(message.ACK, message.EMPTY, 0xBEEF) == b"\x60\x00\xbe\xef"
    assert message.decode(b"\x60\x00\xbe\xef") == message.Message(message.ACK, 0, 0xBEEF)


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
        b"\x60\x00\x00\x01\x01",  # empty message with a token length
        b"\x40\x02\x00\x01\x1f",  # length nibble 15
        b"\x40\x02\x00\x01\xe0\x00",  # two-byte delta extension cut short
        b"\x40\x02\x00\x01\x0d",  # one-byte length extension missing
        b"\x40\x02\x00\x01\x0e\x00\x00",  # 269-byte value announced, none there
    ]
    + [bytes((0x40 | length, 0x02, 0x00, 0x01)) + b"t" * 16 for length in range(9, 16)],
)
def test_rejects_malformed(raw):
    with pytest.raises(message.MessageFormatError):
        message.decode(raw)


def test_code_text():
    assert message.code_text(message.CHANGED) == "2.04"
    assert message.code_text(128) == "4.00"
    assert message.code_text(160) == "5.00"


@pytest.mark.parametrize("length", range(9, 16))
def test_token_lengths_9_to_15_are_a_format_error(length):
    with pytest.raises(message.MessageFormatError, match="token length"):
        message.decode_header(bytes((0x40 | length, 0x02, 0, 1)) + b"t" * length)


def test_parse_reads_the_fields_decode_wraps():
    data = message.encode(message.CON, message.POST, 9, b"\x01", [(message.URI_PATH, b"dp")], b"\x80")
    assert message.parse(data) == (message.CON, message.POST, 9, b"\x01", [(message.URI_PATH, b"dp")], b"\x80")


def test_long_options_and_payload_round_trip():
    options = [(message.URI_PATH, b"rd"), (message.URI_QUERY, b"ep=" + b"x" * 300),
               (message.CONTENT_FORMAT, message.uint(40)), (message.NO_RESPONSE, b"\x02")]
    decoded = message.decode(message.encode(message.CON, message.POST, 0xBEEF, b"\x01\x02", options, b"</3/0>"))
    assert (decoded.mtype, decoded.code, decoded.mid, decoded.token) == (message.CON, message.POST, 0xBEEF, b"\x01\x02")
    assert decoded.options == sorted(options) and decoded.payload == b"</3/0>"
    assert decoded.uint_option(message.CONTENT_FORMAT) == 40 and decoded.strings(message.URI_PATH) == ["rd"]


def test_block_options():
    assert message.block_option(message.block_value(3, True, 64)) == (3, True, 64)
    assert message.block_option(message.block_value(0, False, 1024)) == (0, False, 1024)
    with pytest.raises(message.MessageFormatError):
        message.block_option(b"\x07")


def test_encoder_refuses_a_long_token():
    with pytest.raises(ValueError):
        message.encode(message.CON, message.GET, 1, b"t" * 9)
