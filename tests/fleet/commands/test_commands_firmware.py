"""Object 5 (Firmware Update) by hand: read and observed, never written or executed outside a campaign."""

from __future__ import annotations

import pytest

from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import validate_request
from fleet.errors import ValidationFailed


def request(operation: Operation, path: str, value=None) -> CommandRequest:
    return CommandRequest(Target(device_ids=()), operation, path, value=value)


@pytest.mark.parametrize(("operation", "path", "value"), [
    (Operation.WRITE, "/5/0/1", "coap://elsewhere.example/evil.bin"),
    (Operation.EXECUTE, "/5/0/2", None),
])
def test_object_5_is_not_written_or_executed_by_hand(operation, path, value):
    with pytest.raises(ValidationFailed) as refused:
        validate_request(request(operation, path, value))
    assert "only by firmware campaigns" in refused.value.errors[0].message


@pytest.mark.parametrize(("operation", "path"), [(Operation.READ, "/5/0/3"), (Operation.OBSERVE, "/5/0")])
def test_object_5_is_read_and_observed_as_any_other(operation, path):
    validate_request(request(operation, path))
