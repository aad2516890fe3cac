"""coerce: raw decoded values become the Python type their resource definition names."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from fleet.objectmodel import ResourceDef, ResourceType, coerce, parse_objlnk


def resource(kind: ResourceType) -> ResourceDef:
    return ResourceDef(1, "test", kind, "RW", False, False, None, None)


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        (ResourceType.INTEGER, 42, 42),
        (ResourceType.INTEGER, -(2**63), -(2**63)),
        (ResourceType.INTEGER, 7.0, 7),
        (ResourceType.UNSIGNED, 2**64 - 1, 2**64 - 1),
        (ResourceType.FLOAT, 21.5, 21.5),
        (ResourceType.FLOAT, 21, 21.0),
        (ResourceType.BOOLEAN, True, True),
        (ResourceType.STRING, "U", "U"),
        (ResourceType.CORELNK, "</3/0>", "</3/0>"),
        (ResourceType.OPAQUE, bytearray(b"\x00\x01"), b"\x00\x01"),
        (ResourceType.OPAQUE, memoryview(b"ab"), b"ab"),
        (ResourceType.OBJLNK, (3, 0), (3, 0)),
        (ResourceType.OBJLNK, [3416, 65535], (3416, 65535)),
        (ResourceType.OBJLNK, "3453:1", (3453, 1)),
        (ResourceType.TIME, 1367491215, datetime(2013, 5, 2, 10, 40, 15, tzinfo=UTC)),
        (ResourceType.TIME, 1.5, datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)),
        (
            ResourceType.TIME,
            datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1))),
            datetime(2024, 1, 1, 0, 0, tzinfo=UTC),
        ),
    ],
)
def test_coerce_accepts(kind: ResourceType, raw: object, expected: object) -> None:
    value = coerce(resource(kind), raw)
    assert value == expected
    assert type(value) is type(expected)


def test_time_is_utc() -> None:
    value = coerce(resource(ResourceType.TIME), 0)
    assert value.tzinfo is UTC


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (ResourceType.INTEGER, True),
        (ResourceType.INTEGER, 1.5),
        (ResourceType.INTEGER, "1"),
        (ResourceType.INTEGER, 2**63),
        (ResourceType.INTEGER, math.inf),
        (ResourceType.UNSIGNED, -1),
        (ResourceType.UNSIGNED, 2**64),
        (ResourceType.FLOAT, math.nan),
        (ResourceType.FLOAT, -math.inf),
        (ResourceType.FLOAT, False),
        (ResourceType.FLOAT, "1.0"),
        (ResourceType.FLOAT, 10**400),
        (ResourceType.BOOLEAN, 1),
        (ResourceType.BOOLEAN, "true"),
        (ResourceType.STRING, b"U"),
        (ResourceType.STRING, 5),
        (ResourceType.OPAQUE, "AAE"),
        (ResourceType.TIME, datetime(2024, 1, 1)),
        (ResourceType.TIME, "2024-01-01"),
        (ResourceType.TIME, math.nan),
        (ResourceType.TIME, 10**20),
        (ResourceType.TIME, True),
        (ResourceType.OBJLNK, (3, 65536)),
        (ResourceType.OBJLNK, (3,)),
        (ResourceType.OBJLNK, "3-0"),
        (ResourceType.OBJLNK, "3:"),
        (ResourceType.OBJLNK, ":0"),
        (ResourceType.OBJLNK, "3:0:1"),
        (ResourceType.NONE, None),
        (ResourceType.NONE, 1),
    ],
)
def test_coerce_rejects_mismatches(kind: ResourceType, raw: object) -> None:
    with pytest.raises(ValueError):
        coerce(resource(kind), raw)


def test_parse_objlnk() -> None:
    assert parse_objlnk("0:65535") == (0, 65535)
    with pytest.raises(ValueError):
        parse_objlnk("65536:0")
