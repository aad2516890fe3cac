"""Group input validation and the group cursor: pure functions, no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from fleet.errors import ValidationFailed
from fleet.groups.models import DeviceGroup, GroupChanges
from fleet.groups.service import decode_cursor, encode_cursor
from fleet.groups.validation import (device_ids, member_filter, saved_filter, validate_group_changes,
                                     validate_new_group)
from fleet.registry.models import BoundingBox, Circle, DeviceFilter, DeviceKind


def fields(exc: pytest.ExceptionInfo) -> set[str]:
    return {e.field for e in exc.value.errors}


def test_new_static_group_is_trimmed_and_deduplicated():
    a, b = uuid.uuid4(), uuid.uuid4()
    group = validate_new_group({"name": "  Night  works ", "device_ids": [str(a), b, a]})
    assert (group.name, group.description, group.filter, group.device_ids) == ("Night  works", "", None, (a, b))


def test_new_dynamic_group_keeps_a_normalised_filter():
    group = validate_new_group({"name": "Plaza", "description": "line one\nline two",
                                "filter": {"kind": "streetlight", "near": {"lat": 37.5, "lon": 127}}})
    assert group.filter == DeviceFilter(kind=DeviceKind.STREETLIGHT, near=Circle(37.5, 127.0, 500.0))
    assert group.description == "line one\nline two"


def test_every_bad_field_is_named_at_once():
    with pytest.raises(ValidationFailed) as exc:
        validate_new_group({"name": "", "description": 5, "colour": "red",
                            "filter": {"district": "M"}, "device_ids": ["x"]})
    assert fields(exc) == {"name", "description", "colour", "filter", "device_ids"}
    with pytest.raises(ValidationFailed) as exc:
        validate_new_group({})
    assert [(e.field, e.message) for e in exc.value.errors] == [("name", "is required")]


@pytest.mark.parametrize("raw, field", [
    ({"group_id": str(uuid.uuid4())}, "filter.group_id"),
    ({"group_id": str(uuid.uuid4()), "kind": "streetlight"}, "filter.group_id"),
    ({}, "filter"),
    ({"tag": ""}, "filter"),
    ("kind=streetlight", "filter"),
    ({"kind": "toaster"}, "filter.kind"),
    ({"bbox": [3, 3, 1, 1]}, "filter.bbox"),
    ({"near": {"lat": 37, "lon": 127, "radius_m": -1}}, "filter.near"),
    ({"radius_m": 100}, "filter.radius_m"),
    ({"firmware": "1.0\x00"}, "filter.firmware"),
    ({"colour": "red"}, "filter.colour"),
])
def test_saved_filter_rejections(raw, field):
    with pytest.raises(ValidationFailed) as exc:
        saved_filter(raw)
    assert field in fields(exc)


def test_saved_filter_accepts_each_condition():
    parsed = saved_filter({"status": "offline", "tag": "festival", "firmware": "2.1",
                           "bbox": [126.9, 37.4, 127.1, 37.6], "near": {"lat": 37.5, "lon": 127, "radius_m": 80}})
    assert parsed.bbox == BoundingBox(126.9, 37.4, 127.1, 37.6)
    assert parsed.near == Circle(37.5, 127.0, 80.0)
    assert parsed.group_id is None


def test_device_ids_limits():
    with pytest.raises(ValidationFailed) as exc:
        device_ids([], required=True)
    assert fields(exc) == {"device_ids"}
    with pytest.raises(ValidationFailed) as exc:
        device_ids([str(uuid.uuid4()), "nope", 7])
    assert fields(exc) == {"device_ids[1]", "device_ids[2]"}
    with pytest.raises(ValidationFailed):
        device_ids([uuid.uuid4() for _ in range(10_001)])
    with pytest.raises(ValidationFailed):
        device_ids("abc")


def test_changes_tell_clearing_the_filter_from_leaving_it():
    assert validate_group_changes({}).is_empty()
    assert validate_group_changes({"filter": None}) == GroupChanges(filter_set=True)
    assert validate_group_changes({"description": None}) == GroupChanges(description="")
    with pytest.raises(ValidationFailed) as exc:
        validate_group_changes({"name": None, "device_ids": [], "filter": {}})
    assert fields(exc) == {"name", "device_ids", "filter"}


def test_changes_relative_to_the_group_drop_what_is_already_so():
    now = datetime.now(UTC)
    group = DeviceGroup(uuid.uuid4(), "Plaza", "", DeviceFilter(district="Jung-gu"), 3, now, now)
    same = validate_group_changes({"name": "Plaza ", "description": "", "filter": {"district": "Jung-gu"}})
    assert same.relative_to(group).is_empty()
    other = validate_group_changes({"name": "Plaza", "filter": {"district": "Mapo-gu"}}).relative_to(group)
    assert (other.name, other.filter_set, other.filter) == (None, True, DeviceFilter(district="Mapo-gu"))
    to_static = validate_group_changes({"filter": None}).relative_to(group)
    assert to_static.filter_set and to_static.filter is None


def test_member_filter_narrows_one_group():
    group_id = uuid.uuid4()
    assert member_filter(group_id, {"kind": "wifi_ap", "status": None}) == DeviceFilter(
        kind=DeviceKind.WIFI_AP, group_id=group_id)
    with pytest.raises(ValidationFailed) as exc:
        member_filter(group_id, {"district": "a\x00b"})
    assert fields(exc) == {"district"}
    with pytest.raises(ValidationFailed) as exc:
        member_filter(group_id, {"group_id": str(uuid.uuid4())})
    assert fields(exc) == {"group_id"}


@pytest.mark.parametrize("name", ["Plaza", "광화문 가로등", 'quote " and , comma', "g:colon", "x" * 200])
def test_cursor_round_trip(name):
    now = datetime.now(UTC)
    group = DeviceGroup(uuid.uuid4(), name, "", None, 0, now, now)
    assert decode_cursor(encode_cursor(group)) == (name, group.id)


@pytest.mark.parametrize("cursor", ["", "zzz", "ZDoxMA", "Zzpbe10", "ZzpbImEiXQ", "Zzp7fQ", "é", "x" * 2000])
def test_foreign_cursors_are_rejected(cursor):
    with pytest.raises(ValidationFailed) as exc:
        decode_cursor(cursor)
    assert fields(exc) == {"cursor"}
