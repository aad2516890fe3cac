"""Typing readings through the catalog: known resources get their type, unknown ones pass."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleet.objectmodel import CATALOG, Reading, ResourcePath
from protocols.lwm2m import senml, values
from protocols.lwm2m.errors import CodecError

P = ResourcePath.parse


def test_spec_device_read_gets_typed(payload) -> None:
    readings = values.typed(senml.decode_json(payload("device-3-0.senml.json")), CATALOG)
    by_path = {str(reading.path): reading.value for reading in readings}
    assert by_path["/3/0/13"] == datetime(2013, 5, 2, 10, 40, 15, tzinfo=UTC)
    assert by_path["/3/0/9"] == 100 and type(by_path["/3/0/9"]) is int
    assert by_path["/3/0/0"] == "Open Mobile Alliance"


def test_numbers_take_their_resource_type() -> None:
    readings = values.typed([
        Reading(P("/3311/0/5851"), None, 80.0),  # Dimmer is an Integer
        Reading(P("/3303/0/5700"), None, 21),  # Sensor Value is a Float
        Reading(P("/3435/0/10"), None, 1700000000),  # Forecast full date is a Time
    ], CATALOG)
    assert [reading.value for reading in readings] == [
        80, 21.0, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)]
    assert type(readings[0].value) is int and type(readings[1].value) is float


def test_unknown_objects_and_resources_keep_their_raw_type() -> None:
    readings = [
        Reading(P("/3304/0/5700"), None, 55.5),  # Humidity is not in the catalog
        Reading(P("/3303/0/9999"), None, "vendor"),  # nor is this Temperature resource
        Reading(P("/10241/3/0"), None, b"\x01"),
    ]
    assert values.typed(readings, CATALOG) == readings


def test_time_of_the_reading_is_kept() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert values.typed([Reading(P("/3/0/9"), at, 50.0)], CATALOG) == [
        Reading(P("/3/0/9"), at, 50)]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/3/0/9", "full"),
        ("/3/0/9", 50.5),
        ("/3311/0/5850", 1),
        ("/3/0/0", 42),
        ("/3/0/22/0", "3416"),
        ("/3/0/4", 1),  # Reboot is executable
    ],
)
def test_mismatched_values_are_refused_with_their_path(path: str, value: object) -> None:
    with pytest.raises(CodecError, match=path):
        values.typed([Reading(P(path), None, value)], CATALOG)


def test_shared_value_forms() -> None:
    assert values.seconds(datetime(2013, 5, 2, 10, 40, 15, tzinfo=UTC)) == 1367491215
    assert values.seconds(datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)) == 1.5
    assert values.objlnk_text((3416, 0)) == "3416:0"
    assert values.check_number(-(2**63), "v") == -(2**63)
    for bad in (True, "1", float("nan"), 2**64, None):
        with pytest.raises(CodecError):
            values.check_number(bad, "v")
    with pytest.raises(CodecError):
        values.seconds(datetime(2024, 1, 1))
    with pytest.raises(CodecError):
        values.objlnk_text((1, 65536))
