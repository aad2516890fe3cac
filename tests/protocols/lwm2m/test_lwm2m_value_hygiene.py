"""Every decoder refuses values PostgreSQL could not store, with a diagnostic naming the value:
NUL in a string, strings above 4 KiB, NaN/±Inf, integers outside LwM2M's 64-bit ranges."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime

import cbor2
import pytest

from fleet.objectmodel import CATALOG, ResourcePath
from protocols.lwm2m import content, linkformat, lwm2m_cbor, senml, tlv
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.values import MAX_STRING_BYTES, check_text, storable

P = ResourcePath.parse
NOW = datetime(2026, 12, 6, tzinfo=UTC)
TOO_LONG = "x" * (MAX_STRING_BYTES + 1)
LONGEST = "é" * (MAX_STRING_BYTES // 2)  # two UTF-8 bytes each: exactly the limit
INT64_MAX = 2**63 - 1


def _refused(decode, *args, match: str) -> None:
    with pytest.raises(CodecError, match=match) as caught:
        decode(*args)
    assert str(caught.value).isascii()


@pytest.mark.parametrize(("value", "match"), [
    ("a\x00b", "NUL"),
    (TOO_LONG, "longer than 4096 bytes"),
    ("é" * (MAX_STRING_BYTES // 2 + 1), "longer than 4096 bytes"),
    ("a\ud800", "not valid Unicode"),
])
def test_check_text_refuses(value, match):
    with pytest.raises(CodecError, match=match):
        check_text(value, "vs")


def test_check_text_takes_the_longest_allowed_and_unicode():
    assert check_text(LONGEST, "vs") == LONGEST
    assert check_text("Gangnam-gu 강남구", "vs") == "Gangnam-gu 강남구"


# -- SenML JSON and CBOR -------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["json", "cbor"])
@pytest.mark.parametrize(("record", "match"), [
    ({"n": "/3/0/0", "vs": "Acme\x00"}, "record 0 vs: string contains a NUL"),
    ({"n": "/3/0/0", "vs": TOO_LONG}, "record 0 vs: string is longer"),
    ({"n": "/3311/0/5851", "v": 2**63}, "outside the signed 64-bit range"),  # Dimmer: Integer
    ({"n": "/3311/0/5851", "v": 2**64}, "64-bit|CBOR tags"),  # a bignum in CBOR
    ({"bn": "/3311/0/", "bv": INT64_MAX, "n": "5851", "v": 1}, "outside the signed 64-bit range"),
])
def test_senml_refuses_unstorable_values(encoding, record, match):
    decode = senml.decode_json if encoding == "json" else senml.decode_cbor
    labels = {"bn": -2, "bv": -5, "n": 0, "v": 2, "vs": 3}
    payload = (json.dumps([record]).encode() if encoding == "json"
               else cbor2.dumps([{labels[key]: value for key, value in record.items()}]))
    _refused(decode, payload, match=match)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_senml_cbor_refuses_non_finite_numbers(value):
    _refused(senml.decode_cbor, cbor2.dumps([{0: "/3303/0/5700", 2: value}]), match="finite")


def test_senml_json_has_no_nan_to_begin_with():
    _refused(senml.decode_json, b'[{"n":"/3303/0/5700","v":NaN}]', match="invalid SenML JSON")


def test_senml_keeps_what_is_storable():
    pack = [{"n": "/3/0/0", "vs": LONGEST}, {"n": "/0/0/13", "v": 2**64 - 1},  # Unsigned
            {"n": "/32769/0/1", "v": 2**63}, {"n": "/3311/0/5851", "v": INT64_MAX}]  # unknown
    readings = senml.decode_json(json.dumps(pack).encode(), now=NOW)
    assert [r.value for r in readings] == [LONGEST, 2**64 - 1, 2**63, INT64_MAX]


# -- TLV -----------------------------------------------------------------------------------------

def _tlv_resource(resource_id: int, value: bytes) -> bytes:
    return tlv.encode([(P(f"/3/0/{resource_id}"), value)], P("/3/0"))


def test_tlv_refuses_a_nul_in_a_string_resource():
    payload = _tlv_resource(0, b"Acme\x00Corp")
    _refused(tlv.decode_typed, payload, P("/3/0"), CATALOG, match="/3/0/0: string contains a NUL")


def test_tlv_refuses_an_over_long_string():
    payload = _tlv_resource(1, TOO_LONG.encode())
    _refused(tlv.decode_typed, payload, P("/3/0"), CATALOG, match="longer than 4096")


def test_tlv_refuses_a_non_finite_float():
    payload = tlv.encode([(P("/3303/0/5700"), struct.pack(">d", float("nan")))], P("/3303/0"))
    _refused(tlv.decode_typed, payload, P("/3303/0"), CATALOG, match="not finite")


def test_tlv_takes_an_unsigned_above_the_signed_range():
    payload = tlv.encode([(P("/0/0/13"), (2**64 - 1).to_bytes(8, "big"))], P("/0/0"))
    [reading] = tlv.decode_typed(payload, P("/0/0"), CATALOG)
    assert reading.value == 2**64 - 1


# -- LwM2M CBOR ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("document", "match"), [
    ({3: {0: {0: "Acme\x00"}}}, "/3/0/0: string contains a NUL"),
    ({3: {0: {1: TOO_LONG}}}, "/3/0/1: string is longer"),
    ({3311: {0: {5851: 2**63}}}, "/3311/0/5851: integer is outside the signed 64-bit range"),
    ({3303: {0: {5700: float("inf")}}}, "finite"),
])
def test_lwm2m_cbor_refuses_unstorable_values(document, match):
    _refused(lwm2m_cbor.decode, cbor2.dumps(document), match=match)


# -- plain text ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "text", "match"), [
    ("/3/0/0", b"Acme\x00", "NUL"),  # String
    ("/32769/0/1", b"x\x00", "NUL"),  # unknown resource: kept as text, still checked
    ("/3/0/1", TOO_LONG.encode(), "longer than 4096"),
    ("/3303/0/5700", b"nan", "finite"),  # Float
    ("/3303/0/5700", b"inf", "finite"),
    ("/3311/0/5851", b"9223372036854775808", "64-bit"),  # Integer
])
def test_plain_text_refuses_unstorable_values(path, text, match):
    _refused(content.decode, content.TEXT_PLAIN, text, P(path), NOW, match=match)


def test_every_content_format_goes_through_the_same_check():
    for content_format, payload, path in [
        (content.SENML_JSON, json.dumps([{"n": "/3/0/0", "vs": "a\x00"}]).encode(), P("/3/0")),
        (content.SENML_CBOR, cbor2.dumps([{0: "/3/0/0", 3: "a\x00"}]), P("/3/0")),
        (content.LWM2M_TLV, _tlv_resource(0, b"a\x00"), P("/3/0")),
        (content.LWM2M_CBOR, cbor2.dumps({3: {0: {0: "a\x00"}}}), P("/3/0")),
        (content.TEXT_PLAIN, b"a\x00", P("/3/0/0")),
    ]:
        _refused(content.decode, content_format, payload, path, NOW, match="NUL")


def test_storable_passes_clean_readings_through():
    readings = senml.decode_json(b'[{"n":"/3303/0/5700","v":21.5},{"n":"/3/0/0","vs":"Acme"}]', now=NOW)
    assert storable(readings) is readings


# -- link format ---------------------------------------------------------------------------------

def test_link_format_refuses_a_nul():
    _refused(linkformat.parse, b'</3/0>;title="a\x00b"', match="NUL")
