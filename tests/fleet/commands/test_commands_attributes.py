"""Notification attributes and the operations that take them: decoded once, refused clearly."""

from __future__ import annotations

import msgspec
import pytest

from fleet.commands.models import CommandRequest, NotificationAttributes, Operation, Target
from fleet.commands.service import validate_request
from fleet.errors import ValidationFailed


def attributes(**given) -> NotificationAttributes:
    return msgspec.convert(given, NotificationAttributes)


@pytest.mark.parametrize("given, problem", [
    ({"pmin": -1}, ">= 0"),
    ({"st": -0.5}, ">= 0"),
    ({"pmax": 1.5}, "Expected `int | null`"),
    ({"pmin": 10, "every": 5}, "unknown field"),
])
def test_malformed_attributes_are_refused_when_decoded(given, problem):
    with pytest.raises(msgspec.ValidationError, match=problem):
        attributes(**given)


@pytest.mark.parametrize("given, problem", [
    ({}, "at least one"),
    ({"pmin": 60, "pmax": 10}, "pmin must not exceed pmax"),
    ({"gt": 10, "lt": 20}, "below gt"),
    ({"gt": 10, "lt": 5, "st": 3}, "below gt"),
])
def test_attributes_breaking_the_rules_between_them_are_refused_as_domain_rules(given, problem):
    with pytest.raises(ValidationFailed) as refused:
        validate_request(request(Operation.WRITE_ATTRIBUTES, "/3416/0", attributes=attributes(**given)))
    assert any(problem in e.message for e in refused.value.errors)


def test_good_attributes_keep_only_what_was_given():
    given = attributes(pmin=10, pmax=60, gt=-2.5, lt=-10, st=1)
    assert msgspec.to_builtins(given) == {"pmin": 10, "pmax": 60, "gt": -2.5, "lt": -10, "st": 1}


def request(operation: Operation, path: str, **fields) -> CommandRequest:
    return CommandRequest(Target(device_ids=()), operation, path, **fields)


def test_write_attributes_stores_the_attributes_as_its_value():
    value = validate_request(request(Operation.WRITE_ATTRIBUTES, "/3416/0", attributes=attributes(pmax=60)))
    assert value == {"pmax": 60}


@pytest.mark.parametrize("bad", [
    request(Operation.WRITE_ATTRIBUTES, "/3416/0/1"),  # no attributes
    request(Operation.WRITE_ATTRIBUTES, "/3416/0/1/0", attributes=attributes(pmin=1)),
    request(Operation.WRITE_ATTRIBUTES, "/3416/0/1", value=5, attributes=attributes(pmin=1)),
    request(Operation.DISCOVER, "/3416/0", value=1),
    request(Operation.DISCOVER, "/3416/0", attributes=attributes(pmin=1)),
    request(Operation.READ, "/3416/0", attributes=attributes(pmin=1)),
])
def test_misused_operations_are_refused(bad):
    with pytest.raises(ValidationFailed):
        validate_request(bad)


def test_discover_takes_any_level_down_to_a_resource():
    for path in ("/3416", "/3416/0", "/3416/0/1"):
        assert validate_request(request(Operation.DISCOVER, path)) is None
