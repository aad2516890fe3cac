"""Encoding SenML JSON and CBOR: the spec's bytes back, base name and time compression, refusals."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from fleet.objectmodel import Reading, ResourcePath
from protocols.lwm2m import senml
from protocols.lwm2m.errors import CodecError

P = ResourcePath.parse


def test_spec_examples_encode_back_byte_for_byte(payload) -> None:
    readings = senml.decode_json(payload("device-3-0.senml.json"))
    assert senml.encode_json(readings) == payload("device-3-0.senml.json").strip()
    assert senml.encode_cbor(readings) == payload("device-3-0.senml-cbor.hex")


def test_encode_compresses_names_and_times() -> None:
    at = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    readings = [
        Reading(P("/3303/0/5700"), at, 21.5),
        Reading(P("/3303/0/5601"), at, 19),
        Reading(P("/3/0/7/1"), at + timedelta(seconds=2), 5000),
    ]
    assert json.loads(senml.encode_json(readings)) == [
        {"bn": "/3303/0/", "bt": int(at.timestamp()), "n": "5700", "v": 21.5},
        {"n": "5601", "v": 19},
        {"bn": "/3/0/", "n": "7/1", "t": 2, "v": 5000},
    ]
    assert senml.decode_json(senml.encode_json(readings)) == readings
    assert senml.decode_cbor(senml.encode_cbor(readings)) == readings


def test_encode_keeps_untimed_readings_untimed() -> None:
    at = datetime(2026, 11, 24, 12, 0, 0, 250000, tzinfo=UTC)
    readings = [Reading(P("/3303/0/5700"), None, 21.5), Reading(P("/3303/0/5700"), at, 21.0)]
    assert senml.decode_json(senml.encode_json(readings)) == readings
    assert senml.decode_cbor(senml.encode_cbor(readings)) == readings


def test_encode_round_trips_every_value_kind() -> None:
    readings = [
        Reading(P("/3/0/0"), None, "ACME"),
        Reading(P("/3/0/9"), None, -(2**63)),
        Reading(P("/0/0/13"), None, 2**64 - 1),
        Reading(P("/3303/0/5700"), None, -40.125),
        Reading(P("/3311/0/5850"), None, False),
        Reading(P("/5/0/0"), None, bytes(range(256))),
        Reading(P("/3/0/22/3"), None, (3416, 65535)),
    ]
    assert senml.decode_json(senml.encode_json(readings)) == readings
    assert senml.decode_cbor(senml.encode_cbor(readings)) == readings


def test_encode_writes_datetimes_as_numbers() -> None:
    at = datetime(2013, 5, 2, 10, 40, 15, tzinfo=UTC)
    encoded = senml.encode_json([Reading(P("/3/0/13"), None, at)])
    assert json.loads(encoded) == [{"bn": "/3/0/", "n": "13", "v": 1367491215}]


@pytest.mark.parametrize(
    "reading",
    [
        Reading(P("/3/0"), None, 1),
        Reading(P("/3303/0/5700"), None, math.nan),
        Reading(P("/3303/0/5700"), None, {"x": 1}),
        Reading(P("/3303/0/5700"), None, None),
        Reading(P("/3/0/13"), None, datetime(2024, 1, 1)),
        Reading(P("/3/0/22/0"), None, (3416, -1)),
        Reading(P("/3303/0/5700"), datetime(1970, 1, 2, tzinfo=UTC), 1.0),
    ],
    ids=repr,
)
def test_encode_refuses_what_senml_cannot_say(reading: Reading) -> None:
    with pytest.raises(CodecError):
        senml.encode_json([reading])
    with pytest.raises(CodecError):
        senml.encode_cbor([reading])
