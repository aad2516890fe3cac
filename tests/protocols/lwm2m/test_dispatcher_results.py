"""Command results show a read's values the way the device's state shows them."""

from __future__ import annotations

from datetime import UTC, datetime

from fleet.objectmodel import Reading, ResourcePath
from fleet.telemetry.models import split_value, stored_value
from protocols.lwm2m.dispatcher import _json_readings

P = ResourcePath.parse


def test_opaque_values_are_base64_like_in_state():
    opaque = b"\x00\xffhello"
    result = _json_readings([Reading(P("/3/0/17"), None, opaque)])
    assert result == {"readings": [{"path": "/3/0/17", "value": "AP9oZWxsbw=="}]}
    assert result["readings"][0]["value"] == stored_value(*split_value(opaque))


def test_plain_values_pass_unchanged_and_the_others_as_state_has_them():
    at = datetime(2026, 12, 6, tzinfo=UTC)
    result = _json_readings([Reading(P("/3/0/0"), None, "Lumen"), Reading(P("/3/0/9"), None, 2**60),
                             Reading(P("/3/0/13"), None, at), Reading(P("/3/0/21"), None, (3, 0))])
    assert [r["value"] for r in result["readings"]] == ["Lumen", 2**60, int(at.timestamp()), "3:0"]
