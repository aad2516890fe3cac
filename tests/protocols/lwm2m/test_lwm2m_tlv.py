"""OMA TLV: the spec's Device and Access Control payloads, every request level, and bad lengths."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from fleet.objectmodel import CATALOG, Reading, ResourcePath, ResourceType
from protocols.lwm2m import tlv
from protocols.lwm2m.errors import CodecError

P = ResourcePath.parse

DEVICE_VALUES = {
    "/3/0/0": "Open Mobile Alliance",
    "/3/0/1": "Lightweight M2M Client",
    "/3/0/2": "345000123",
    "/3/0/3": "1.0",
    "/3/0/6/0": 1,
    "/3/0/6/1": 5,
    "/3/0/7/0": 3800,
    "/3/0/7/1": 5000,
    "/3/0/8/0": 125,
    "/3/0/8/1": 900,
    "/3/0/9": 100,
    "/3/0/10": 15,
    "/3/0/11/0": 0,
    "/3/0/13": datetime(2013, 5, 2, 10, 40, 15, tzinfo=UTC),
    "/3/0/14": "+02:00",
    "/3/0/16": "U",
}


def test_device_read_from_the_spec(payload) -> None:
    readings = tlv.decode_typed(payload("device-3-0.tlv.hex"), P("/3/0"), CATALOG)
    assert {str(reading.path): reading.value for reading in readings} == DEVICE_VALUES
    assert [str(reading.path) for reading in readings] == list(DEVICE_VALUES)
    assert all(reading.time is None for reading in readings)


def test_device_write_encodes_to_the_spec_bytes(payload) -> None:
    values = [(P(path), value) for path, value in DEVICE_VALUES.items()]
    assert tlv.encode(values, P("/3/0"), CATALOG) == payload("device-3-0.tlv.hex")


def test_access_control_object_read_from_the_spec(payload) -> None:
    data = payload("access-control-2.tlv.hex")
    entries = tlv.decode(data, P("/2"))
    assert entries == [
        (P("/2/0/0"), b"\x01"), (P("/2/0/1"), b"\x00"), (P("/2/0/2/127"), b"\x07"),
        (P("/2/0/3"), b"\x7f"),
        (P("/2/2/0"), b"\x03"), (P("/2/2/1"), b"\x00"), (P("/2/2/2/127"), b"\x07"),
        (P("/2/2/2/310"), b"\x01"), (P("/2/2/3"), b"\x7f"),
    ]
    # Object 2 is not in the catalog: its values stay bytes, and bytes encode back unchanged.
    readings = tlv.decode_typed(data, P("/2"), CATALOG)
    assert readings[0] == Reading(P("/2/0/0"), None, b"\x01")
    assert tlv.encode(entries, P("/2")) == data


def test_resource_level_requests() -> None:
    assert tlv.decode(bytes.fromhex("8606 410001 410105"), P("/3/0/6")) == [
        (P("/3/0/6/0"), b"\x01"), (P("/3/0/6/1"), b"\x05")]
    assert tlv.decode(bytes.fromhex("C10964"), P("/3/0/9")) == [(P("/3/0/9"), b"d")]
    assert tlv.decode(bytes.fromhex("410105"), P("/3/0/6/1")) == [(P("/3/0/6/1"), b"\x05")]
    assert tlv.decode(b"", P("/3303/0")) == []


def test_instance_wrapped_in_its_object_instance_tlv() -> None:
    wrapped = bytes.fromhex("0800 03 C10964")
    assert tlv.decode(wrapped, P("/3/0")) == [(P("/3/0/9"), b"d")]
    with pytest.raises(CodecError):
        tlv.decode(wrapped.replace(b"\x08\x00", b"\x08\x01", 1), P("/3/0"))


def test_wide_ids_and_long_values_round_trip() -> None:
    values = [
        (P("/3303/0/5700"), 21.5),
        (P("/3303/0/5701"), "Cel"),
        (P("/3303/1/5700"), -3.0),
        (P("/5/0/0"), bytes(300)),
    ]
    data = tlv.encode(values[:3], P("/3303"), CATALOG)
    assert tlv.decode_typed(data, P("/3303"), CATALOG) == [
        Reading(path, None, value) for path, value in values[:3]]
    for size in (7, 8, 255, 256, 65535, 65536, 70_000):
        blob = bytes(range(256)) * (size // 256) + bytes(size % 256)
        data = tlv.encode([(P("/5/0/0"), blob)], P("/5/0/0"), CATALOG)
        assert tlv.decode_typed(data, P("/5/0/0"), CATALOG) == [Reading(P("/5/0/0"), None, blob)]


@pytest.mark.parametrize(
    ("kind", "raw", "value"),
    [
        (ResourceType.INTEGER, b"\xff", -1),
        (ResourceType.INTEGER, b"\x80\x00", -32768),
        (ResourceType.INTEGER, b"\x7f\xff\xff\xff", 2**31 - 1),
        (ResourceType.INTEGER, b"\x80" + bytes(7), -(2**63)),
        (ResourceType.UNSIGNED, b"\xff", 255),
        (ResourceType.UNSIGNED, b"\xff" * 8, 2**64 - 1),
        (ResourceType.FLOAT, struct.pack(">f", 1.5), 1.5),
        (ResourceType.FLOAT, struct.pack(">d", -0.1), -0.1),
        (ResourceType.BOOLEAN, b"\x01", True),
        (ResourceType.BOOLEAN, b"\x00", False),
        (ResourceType.TIME, b"\x51\x82\x42\x8f", datetime(2013, 5, 2, 10, 40, 15, tzinfo=UTC)),
        (ResourceType.OBJLNK, b"\x0d\x58\x00\x01", (3416, 1)),
        (ResourceType.OBJLNK, b"\xff\xff\xff\xff", (65535, 65535)),
        (ResourceType.STRING, "Zürich".encode(), "Zürich"),
        (ResourceType.CORELNK, b"</3/0>", "</3/0>"),
        (ResourceType.OPAQUE, b"", b""),
    ],
)
def test_values_by_type(kind: ResourceType, raw: bytes, value: object) -> None:
    assert tlv.decode_value(raw, kind) == value


def test_encoding_uses_the_smallest_integer_width() -> None:
    assert tlv.encode_value(127) == b"\x7f"
    assert tlv.encode_value(128) == b"\x00\x80"
    assert tlv.encode_value(-129) == b"\xff\x7f"
    assert tlv.encode_value(2**31) == b"\x00\x00\x00\x00\x80\x00\x00\x00"
    assert tlv.encode_value(255, ResourceType.UNSIGNED) == b"\xff"
    assert tlv.encode_value(True) == b"\x01"
    assert tlv.encode_value((3, 1)) == b"\x00\x03\x00\x01"
    assert tlv.encode_value(datetime(2013, 5, 2, 10, 40, 15, 900000, tzinfo=UTC)) == bytes.fromhex(
        "5182428f")


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (ResourceType.INTEGER, b""),
        (ResourceType.INTEGER, b"\x00\x00\x00"),
        (ResourceType.INTEGER, bytes(16)),
        (ResourceType.UNSIGNED, b"\x00" * 5),
        (ResourceType.TIME, b"\x7f" + b"\xff" * 7),
        (ResourceType.FLOAT, b"\x00\x00"),
        (ResourceType.FLOAT, struct.pack(">d", float("nan"))),
        (ResourceType.FLOAT, struct.pack(">f", float("inf"))),
        (ResourceType.BOOLEAN, b"\x02"),
        (ResourceType.BOOLEAN, b"\x00\x01"),
        (ResourceType.BOOLEAN, b""),
        (ResourceType.OBJLNK, b"\x00\x01\x02"),
        (ResourceType.STRING, b"\xc3\x28"),
        (ResourceType.NONE, b""),
    ],
)
def test_bad_values_by_type(kind: ResourceType, raw: bytes) -> None:
    with pytest.raises(CodecError):
        tlv.decode_value(raw, kind)


@pytest.mark.parametrize(
    ("hex_payload", "request_path"),
    [
        ("C8", "/3/0"),  # type byte only
        ("E8 00", "/3/0"),  # 16-bit id cut short
        ("C8 00", "/3/0"),  # 8-bit length missing
        ("D0 00 00", "/3/0"),  # 16-bit length cut short
        ("D8 00 00 00", "/3/0"),  # 24-bit length cut short
        ("C8 00 14 4F 70 65 6E", "/3/0"),  # value shorter than its length
        ("C5 00 01 02", "/3/0"),  # 3-bit length says 5, only 2 follow
        ("08 00 06 C1 00 01 C1 01", "/3"),  # object instance claims more than it holds
        ("08 00 03 C3 00 01 02", "/3"),  # inner TLV runs past its object instance
        ("86 06 41 00 01 41 01", "/3/0"),  # multiple resource cut short
        ("86 03 42 00 05", "/3/0"),  # resource instance overruns its parent
        ("41 00 01", "/3/0"),  # resource instance where resources belong
        ("08 00 03 C1 09 64", "/3/0/9"),  # object instance under a resource request
        ("C1 0A 0F", "/3/0/9"),  # another resource than the one requested
        ("C1 09 64", "/3"),  # resource where object instances belong
        ("41 02 05", "/3/0/6/1"),  # another resource instance than the one requested
        ("08 00 06 08 01 03 C1 09 64", "/3"),  # object instance inside an object instance
        ("86 03 C1 00 01", "/3/0"),  # resource inside a multiple resource
        ("C1 09 64 C1 09 65", "/3/0"),  # the same resource twice
        ("0800 03 C10964 0800 03 C10965", "/3"),  # the same instance twice
    ],
)
def test_malformed_tlv_is_refused(hex_payload: str, request_path: str) -> None:
    with pytest.raises(CodecError):
        tlv.decode(bytes.fromhex(hex_payload), P(request_path))


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(CodecError):
        tlv.decode(bytes(tlv.MAX_PAYLOAD_BYTES + 1), P("/3/0"))


@pytest.mark.parametrize(
    ("values", "request_path"),
    [
        ([(P("/3/0/9"), 1)], "/3303/0"),
        ([(P("/3/0"), 1)], "/3"),
        ([(P("/3/0/9"), 1), (P("/3/0/9"), 2)], "/3/0"),
        ([(P("/3/0/6/0"), 1), (P("/3/0/6"), 2)], "/3/0"),
        ([(P("/3/0/6"), 2), (P("/3/0/6/0"), 1)], "/3/0"),
        ([(P("/3/0/9"), "full")], "/3/0"),
        ([(P("/3/0/13"), "noon")], "/3/0"),
        ([(P("/3303/0/5700"), float("nan"))], "/3303/0"),
        ([(P("/9999/0/0"), {"x": 1})], "/9999/0"),
        ([(P("/9999/0/0"), 2**64)], "/9999/0"),
        ([(P("/9999/0/0"), (1, 2, 3))], "/9999/0"),
    ],
)
def test_encode_refuses_bad_writes(values: list, request_path: str) -> None:
    with pytest.raises(CodecError):
        tlv.encode(values, P(request_path), CATALOG)


def test_encode_single_resource_instance() -> None:
    assert tlv.encode([(P("/3/0/6/1"), 5)], P("/3/0/6/1"), CATALOG) == bytes.fromhex("410105")
    assert tlv.encode([(P("/3/0/6/0"), 1), (P("/3/0/6/1"), 5)], P("/3/0/6"), CATALOG) == (
        bytes.fromhex("8606410001410105"))
