"""SenML JSON and CBOR: spec examples, RFC 8428 base-field and time resolution, strictness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import cbor2
import pytest

from fleet.objectmodel import Reading, ResourcePath
from protocols.lwm2m import senml
from protocols.lwm2m.errors import CodecError

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
P = ResourcePath.parse


def decode(records: list) -> list[Reading]:
    return senml.decode_json(json.dumps(records).encode(), now=NOW)


def test_device_read_from_the_spec(payload) -> None:
    readings = senml.decode_json(payload("device-3-0.senml.json"))
    assert len(readings) == 16
    assert readings[0] == Reading(P("/3/0/0"), None, "Open Mobile Alliance")
    assert readings[4] == Reading(P("/3/0/6/0"), None, 1)
    assert readings[12] == Reading(P("/3/0/11/0"), None, 0)
    assert readings[13] == Reading(P("/3/0/13"), None, 1367491215)
    assert readings[-1] == Reading(P("/3/0/16"), None, "U")


def test_cbor_and_json_forms_of_the_spec_example_agree(payload) -> None:
    from_json = senml.decode_json(payload("device-3-0.senml.json"))
    assert senml.decode_cbor(payload("device-3-0.senml-cbor.hex")) == from_json


def test_base_time_and_relative_offsets(payload) -> None:
    readings = senml.decode_json(payload("power-timeseries.senml.json"), now=NOW)
    base = datetime.fromtimestamp(1.276020076001e09, UTC)
    assert readings[0] == Reading(P("/3305/0/5805"), base, 120.1)
    assert [reading.time for reading in readings[1:]] == [
        base + timedelta(seconds=offset) for offset in (-5, -4, -3, -2, -1, 0)]
    assert {reading.path for reading in readings[1:]} == {P("/3305/0/5800")}
    assert readings[-1].value == 1.7


def test_rfc_example_is_refused_for_its_names(payload) -> None:
    with pytest.raises(CodecError, match="not an LwM2M path"):
        senml.decode_json(payload("rfc8428-multiple-measurements.senml.json"))


def test_waste_bin_send(payload) -> None:
    readings = senml.decode_cbor(payload("waste-bin-send.senml-cbor.hex"), now=NOW)
    at = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert readings == [
        Reading(P("/3435/0/2"), at, 73.5),
        Reading(P("/3435/0/3"), at, 88),
        Reading(P("/3435/0/5"), at, False),
        Reading(P("/3435/0/21"), at - timedelta(minutes=1), True),
        Reading(P("/3303/0/5700"), at - timedelta(minutes=1), -4.25),
        Reading(P("/3/0/9"), at, 61),
    ]


def test_base_name_is_concatenated_and_persists() -> None:
    readings = decode([
        {"bn": "/3303/", "n": "0/5700", "v": 1},
        {"n": "1/5700", "v": 2},
        {"bn": "/3303/2/5700", "v": 3},
        {"bn": "", "n": "/3/0/9", "v": 4},
    ])
    assert [str(reading.path) for reading in readings] == [
        "/3303/0/5700", "/3303/1/5700", "/3303/2/5700", "/3/0/9"]


def test_base_value_is_added() -> None:
    readings = decode([{"bn": "/3303/0/", "bv": 20, "n": "5700", "v": 1.5},
                       {"n": "5601", "v": -2}, {"n": "5701", "vs": "Cel"}])
    assert [reading.value for reading in readings] == [21.5, 18, "Cel"]


def test_no_time_anywhere_means_unknown_time() -> None:
    assert decode([{"n": "/3303/0/5700", "v": 1}])[0].time is None


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([{"n": "/3303/0/5700", "v": 1, "t": 0}], NOW),
        ([{"n": "/3303/0/5700", "v": 1, "t": -60}], NOW - timedelta(seconds=60)),
        ([{"n": "/3303/0/5700", "v": 1, "t": 2.5}], NOW + timedelta(seconds=2.5)),
        # LwM2M 1.1 TS notification example: a base time since boot, below 2**28.
        ([{"bn": "/3303/0/5700", "bt": 25462634, "v": 22.4, "t": -5}],
         NOW + timedelta(seconds=25462629)),
        ([{"n": "/3303/0/5700", "v": 1, "t": 2**28 - 1}], NOW + timedelta(seconds=2**28 - 1)),
        ([{"n": "/3303/0/5700", "v": 1, "t": 2**28}], datetime(1978, 7, 4, 21, 24, 16, tzinfo=UTC)),
        ([{"bt": 1700000000, "n": "/3303/0/5700", "v": 1, "t": -1700000000}], NOW),
    ],
)
def test_relative_and_absolute_times(records: list, expected: datetime) -> None:
    assert decode(records)[0].time == expected


def test_base_time_applies_until_replaced() -> None:
    readings = decode([
        {"bn": "/3303/0/", "bt": 1700000000, "n": "5700", "v": 1},
        {"n": "5700", "v": 2, "t": 10},
        {"bt": 1700000100, "n": "5700", "v": 3},
    ])
    start = datetime.fromtimestamp(1700000000, UTC)
    assert [reading.time for reading in readings] == [
        start, start + timedelta(seconds=10), start + timedelta(seconds=100)]


def test_value_kinds() -> None:
    readings = decode([
        {"bn": "/3/0/", "n": "0", "vs": "ACME"},
        {"n": "9", "v": 100},
        {"n": "22/0", "vlo": "3416:0"},
        {"bn": "/3311/0/", "n": "5850", "vb": True},
        {"bn": "/5/0/", "n": "0", "vd": "AAECA_-_"},
        {"n": "1", "vd": "AAECAw=="},
    ])
    assert [reading.value for reading in readings] == [
        "ACME", 100, (3416, 0), True, b"\x00\x01\x02\x03\xff\xbf", b"\x00\x01\x02\x03"]


def test_cbor_data_values_are_byte_strings() -> None:
    pack = cbor2.dumps([{0: "/5/0/0", 8: b"\x00\xff"}, {0: "/3/0/22/0", "vlo": "1:2"}])
    assert [reading.value for reading in senml.decode_cbor(pack)] == [b"\x00\xff", (1, 2)]


@pytest.mark.parametrize(
    "payload",
    [
        b"", b"{}", b'"x"', b"[1]", b"[[]]", b"[null]", b"[{}]", b"not json", b"[{]",
        b'[{"n":"/3/0/9","v":1}] trailing', b"[\xff]", b'[{"n":"/3/0/9","v":1}',
        b'[{"n":"\xa4","v":1}]', b'[{"n":"/3/0/9","v":1,"\xff":1}]',
        b'[{"n":"/3/0/9"}]',
        b'[{"n":"/3/0/9","v":1,"vs":"1"}]',
        b'[{"n":"/3/0/9","vb":true,"vd":"AA"}]',
        b'[{"n":"/3/0/9","v":1,"s":1}]',
        b'[{"n":"/3/0/9","bs":1,"v":1}]',
        b'[{"n":"/3/0/9","v":1,"foo":1}]',
        b'[{"n":"/3/0/9","v":1,"n_":"x"}]',
        b'[{"n":"/3/0","v":1}]',
        b'[{"n":"3/0/9","v":1}]',
        b'[{"bn":"/3/0/","v":1}]',
        b'[{"n":"/3/0/9/1/2","v":1}]',
        b'[{"n":"/70000/0/9","v":1}]',
        b'[{"n":"urn:dev:ow:10e2073a01080063","v":1}]',
        b'[{"n":9,"v":1}]',
        b'[{"bn":3,"n":"9","v":1}]',
        b'[{"n":"/3/0/9","v":"1"}]',
        b'[{"n":"/3/0/9","v":true}]',
        b'[{"n":"/3/0/9","v":[1]}]',
        b'[{"n":"/3/0/9","v":{"x":1}}]',
        b'[{"n":"/3/0/9","v":18446744073709551616}]',
        b'[{"n":"/3/0/9","v":-9223372036854775809}]',
        b'[{"n":"/3/0/9","v":1e999}]',
        b'[{"n":"/3/0/9","v":NaN}]',
        b'[{"n":"/3/0/0","vs":1}]',
        b'[{"n":"/3/0/0","vb":1}]',
        b'[{"n":"/5/0/0","vd":"AA+/"}]',
        b'[{"n":"/5/0/0","vd":"A"}]',
        b'[{"n":"/5/0/0","vd":"AA AA"}]',
        b'[{"n":"/5/0/0","vd":1}]',
        b'[{"n":"/3/0/22","vlo":"3416"}]',
        b'[{"n":"/3/0/22","vlo":"3416:70000"}]',
        b'[{"n":"/3/0/22","vlo":3416}]',
        b'[{"n":"/3/0/9","v":1,"t":"now"}]',
        b'[{"n":"/3/0/9","v":1,"t":true}]',
        b'[{"n":"/3/0/9","v":1,"t":1e300}]',
        b'[{"n":"/3/0/9","v":1,"t":-1e300}]',
        b'[{"bt":false,"n":"/3/0/9","v":1}]',
        b'[{"bv":"1","n":"/3/0/9","v":1}]',
        b'[{"bv":1e308,"n":"/3/0/9","v":1e308}]',
        b'[{"bver":11,"n":"/3/0/9","v":1}]',
        b'[{"bver":"10","n":"/3/0/9","v":1}]',
        b'[{"bu":1,"n":"/3/0/9","v":1}]',
        b'[{"u":true,"n":"/3/0/9","v":1}]',
        b'[{"ut":"x","n":"/3/0/9","v":1}]',
        b"[" + b'{"n":"/3/0/9","v":1},' * senml.MAX_RECORDS + b'{"n":"/3/0/9","v":1}]',
        b'[{"n":"/3/0/0","vs":"' + b"x" * senml.MAX_PAYLOAD_BYTES + b'"}]',
    ],
    ids=lambda payload: payload[:40].decode("latin-1"),
)
def test_malformed_json_is_refused(payload: bytes) -> None:
    with pytest.raises(CodecError):
        senml.decode_json(payload, now=NOW)


@pytest.mark.parametrize(
    "pack",
    [
        {0: "/3/0/9", 2: 1},
        [[0, "/3/0/9", 2, 1]],
        [{0: "/3/0/9"}],
        [{"n": "/3/0/9", "v": 1}],
        [{0: "/3/0/9", 2: 1, 3: "1"}],
        [{0: "/3/0/9", 5: 1, 2: 1}],
        [{0: "/3/0/9", 2: float("nan")}],
        [{0: "/3/0/9", 2: float("inf")}],
        [{0: "/3/0/9", 2: None}],
        [{0: None, 2: 1}],
        [{0: "/3/0/9", 2: 1, 6: None}],
        [{0: "/3/0/9", 2: 1, 6: float("-inf")}],
        [{0: "/3/0/9", 2: cbor2.CBORTag(1, 5)}],
        [{0: "/3/0/9", 2: cbor2.CBORTag(2, b"\x01" * 9)}],
        [{0: "/3/0/9", 2: cbor2.CBORTag(4, [-1, 15])}],
        [{0: "/3/0/9", 2: cbor2.CBORTag(9999, 1)}],
        [{0: "/3/0/9", 2: cbor2.undefined}],
        [{0: "/3/0/9", 2: cbor2.CBORSimpleValue(99)}],
        [{0: b"/3/0/9", 2: 1}],
        [{0: "/5/0/0", 8: "AAEC"}],
        [{0: "/3/0/0", 3: b"ACME"}],
        [{0: "/3/0/22/0", "vlo": b"1:2"}],
        [{0: "/3/0/9", 2: [[[[[1]]]]]}],
        [{(0,): "/3/0/9", 2: 1}],
        [{0: "/3/0/9", 2: 1, -1: 11}],
        [{-2: "/3/0/", 0: "9", 2: 1, -6: 1}],
    ],
    ids=repr,
)
def test_malformed_cbor_is_refused(pack: object) -> None:
    with pytest.raises(CodecError):
        senml.decode_cbor(cbor2.dumps(pack), now=NOW)


@pytest.mark.parametrize(
    "data",
    [
        b"", b"\x81", b"\x81\xa1", b"\x81\xa2\x00\x66/3/0/9\x02", b"\x81\xa2\x00\x67/3/0/9\x02\x01",
        cbor2.dumps([{0: "/3/0/9", 2: 1}]) + b"\x00",
        b"\x81\xa2\x00\x66/3/0/9\x00\x66/3/0/9",  # duplicate key
        b"\x9f" * 100 + b"\xff" * 100,
        b"\x81\xa1\x00\x62\xc3\x28",  # invalid UTF-8
        b"\xd8\x1c\x81\xd8\x1d\x00",  # shared reference to itself
        b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x81\xa2\x00\x7b\xff\xff\xff\xff\xff\xff\xff\xff",
    ],
)
def test_broken_cbor_is_refused(data: bytes) -> None:
    with pytest.raises(CodecError):
        senml.decode_cbor(data)


def test_indefinite_length_cbor_is_fine() -> None:
    data = b"\x9f\xbf\x00\x6c/3303/0/5700\x02\xf9\x3e\x00\xff\xff"
    assert senml.decode_cbor(data) == [Reading(P("/3303/0/5700"), None, 1.5)]


def test_diagnostics_are_short_ascii() -> None:
    label = "é" * 10_000
    with pytest.raises(CodecError) as caught:
        senml.decode_json(json.dumps([{"n": "/3/0/9", "v": 1, label: 1}]).encode())
    message = str(caught.value)
    assert message.isascii() and len(message) <= 120
    assert "unsupported label" in message
