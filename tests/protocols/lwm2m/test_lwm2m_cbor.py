"""LwM2M CBOR: nested maps and array keys, typed values, and the strict CBOR reader."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import cbor2
import pytest

from fleet.objectmodel import CATALOG, Reading, ResourcePath
from protocols.lwm2m import lwm2m_cbor, senml, values
from protocols.lwm2m.errors import CodecError

P = ResourcePath.parse
AT = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_streetlight_read(payload) -> None:
    readings = lwm2m_cbor.decode(payload("streetlight-read.lwm2m-cbor.hex"))
    assert readings == [
        Reading(P("/3311/0/5850"), None, True),
        Reading(P("/3311/0/5851"), None, 80),
        Reading(P("/3311/0/5805"), None, 1234.5),
        Reading(P("/3311/1/5850"), None, False),
        Reading(P("/3311/1/5851"), None, 0),
        Reading(P("/3/0/13"), None, AT),
        Reading(P("/3/0/6/0"), None, 1),
        Reading(P("/3/0/6/1"), None, 5),
        Reading(P("/3/0/22/0"), None, "3416:0"),
    ]
    typed = {str(reading.path): reading.value for reading in values.typed(readings, CATALOG)}
    assert typed["/3/0/22/0"] == (3416, 0)
    assert typed["/3/0/13"] == AT


# Layouts of one and two resources as other LwM2M CBOR implementations write them.
@pytest.mark.parametrize(
    "hex_payload",
    [
        "A1 83 0D 18 1A 01 18 2A",  # {[13, 26, 1]: 42}
        "BF 9F 0D 18 1A 01 FF 18 2A FF",  # {_ [_ 13, 26, 1]: 42}
        "A1 0D A1 18 1A A1 01 18 2A",  # {13: {26: {1: 42}}}
        "A1 81 0D A1 81 18 1A A1 81 01 18 2A",  # {[13]: {[26]: {[1]: 42}}}
        "BF 9F 0D FF BF 9F 18 1A FF BF 9F 01 FF 18 2A FF FF FF",  # all indefinite
    ],
)
def test_one_resource_in_every_layout(hex_payload: str) -> None:
    assert lwm2m_cbor.decode(bytes.fromhex(hex_payload)) == [Reading(P("/13/26/1"), None, 42)]


@pytest.mark.parametrize(
    "hex_payload",
    [
        "A1 82 0D 18 1A A2 01 18 2A 02 15",  # {[13, 26]: {1: 42, 2: 21}}
        "A2 83 0D 18 1A 01 18 2A 83 0D 18 1A 02 15",  # {[13, 26, 1]: 42, [13, 26, 2]: 21}
        "A2 82 0D 18 1A A1 01 18 2A 83 0D 18 1A 02 15",  # {[13, 26]: {1: 42}, [13, 26, 2]: 21}
    ],
)
def test_two_resources_in_every_layout(hex_payload: str) -> None:
    assert lwm2m_cbor.decode(bytes.fromhex(hex_payload), within=P("/13/26")) == [
        Reading(P("/13/26/1"), None, 42), Reading(P("/13/26/2"), None, 21)]


def test_values_must_lie_within_the_request() -> None:
    data = bytes.fromhex("A1 83 0D 18 1A 01 18 2A")
    with pytest.raises(CodecError, match="outside"):
        lwm2m_cbor.decode(data, within=P("/13/27"))


def test_encode_round_trip() -> None:
    pairs = [
        (P("/3311/0/5850"), True),
        (P("/3311/0/5851"), 80),
        (P("/3311/1/5706"), "warm white"),
        (P("/3/0/13"), AT),
        (P("/3/0/22/0"), (3416, 0)),
        (P("/5/0/0"), b"\x00\x01"),
        (P("/3303/0/5700"), -4.5),
    ]
    data = lwm2m_cbor.encode(pairs)
    assert cbor2.loads(data) == {
        3311: {0: {5850: True, 5851: 80}, 1: {5706: "warm white"}},
        3: {0: {13: AT, 22: {0: "3416:0"}}},
        5: {0: {0: b"\x00\x01"}},
        3303: {0: {5700: -4.5}},
    }
    decoded = values.typed(lwm2m_cbor.decode(data), CATALOG)
    assert [(reading.path, reading.value) for reading in decoded] == pairs


@pytest.mark.parametrize(
    "pairs",
    [
        [(P("/3/0"), 1)],
        [(P("/3/0/9"), 1), (P("/3/0/9"), 2)],
        [(P("/3/0/6"), 1), (P("/3/0/6/0"), 2)],
        [(P("/3/0/6/0"), 1), (P("/3/0/6"), 2)],
        [(P("/3303/0/5700"), math.inf)],
        [(P("/3303/0/5700"), None)],
        [(P("/3/0/13"), datetime(2024, 1, 1))],
        [(P("/3/0/22/0"), (1, 2, 3))],
    ],
    ids=repr,
)
def test_encode_refuses(pairs: list) -> None:
    with pytest.raises(CodecError):
        lwm2m_cbor.encode(pairs)


@pytest.mark.parametrize(
    "document",
    [
        [],
        "text",
        {},  # fine on its own, see below
        {3: 1},
        {3: {0: 1}},
        {-3: {0: {1: 1}}},
        {70000: {0: {1: 1}}},
        {"3": {0: {1: 1}}},
        {True: {0: {1: 1}}},
        {3.0: {0: {1: 1}}},
        {(): 1},
        {(3, 0, 1, 2, 3): 1},
        {3: {0: {1: {2: {3: 1}}}}},
        {(3, 0): {(1, 2): {4: 1}}},
        {(3, "0", 1): 1},
        {(3, 0, 1): None},
        {(3, 0, 1): cbor2.undefined},
        {(3, 0, 1): [1, 2]},
        {(3, 0, 1): math.nan},
        {(3, 0, 1): -math.inf},
        {(3, 0, 1): cbor2.CBORTag(0, "2024-01-01T00:00:00Z")},
        {(3, 0, 1): cbor2.CBORTag(2, b"\x01" + bytes(8))},
        {(3, 0, 1): cbor2.CBORTag(4, [-1, 45])},
        {(3, 0, 1): cbor2.CBORTag(35, "a*b")},
        {(3, 0, 1): cbor2.CBORTag(1, 1e300)},
        {(3, 0, 1): cbor2.CBORTag(1, "yesterday")},
        {(3, 0, 1): cbor2.CBORTag(999, 1)},
        {(3, 0, 1): 1, 3: {0: {1: 2}}},
    ],
    ids=repr,
)
def test_malformed_documents_are_refused(document: object) -> None:
    data = cbor2.dumps(document)
    if document == {}:
        assert lwm2m_cbor.decode(data) == []
        return
    with pytest.raises(CodecError):
        lwm2m_cbor.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xa1",
        b"\xa1\x83\x0d\x18\x1a\x01",
        b"\xa1\x83\x0d\x18\x1a\x01\x18\x2a\x00",  # trailing byte
        b"\xa2\x83\x0d\x18\x1a\x01\x01\x83\x0d\x18\x1a\x01\x02",  # duplicate key
        b"\xa1\x01" * 50 + b"\x00",  # deeper than any path
        b"\xd8\x1c\xa1\x01\xd8\x1d\x00",  # a map that refers to itself
        b"\xff",
        b"\x1c",  # reserved additional information
        b"\xa1\x83\x0d\x18\x1a\x01\x62\xc3\x28",  # invalid UTF-8
        b"\xa1\x83\x0d\x18\x1a\x01\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # huge byte string
    ],
)
def test_broken_cbor_is_refused(data: bytes) -> None:
    with pytest.raises(CodecError):
        lwm2m_cbor.decode(data)


@pytest.mark.parametrize("tag", sorted({*range(0, 300), 1004, 43000, 55799} - {1}))
def test_every_tag_but_epoch_time_is_refused(tag: int) -> None:
    data = cbor2.dumps({(3, 0, 1): cbor2.CBORTag(tag, 0)})
    with pytest.raises(CodecError):
        lwm2m_cbor.decode(data)
    pack = cbor2.dumps([{0: "/3/0/1", 2: cbor2.CBORTag(tag, 0)}])
    with pytest.raises(CodecError):
        senml.decode_cbor(pack)


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(CodecError, match="too large"):
        lwm2m_cbor.decode(bytes(lwm2m_cbor.MAX_PAYLOAD_BYTES + 1))
