"""ResourcePath: parsing, formatting and the range and shape rules of LwM2M paths."""

from __future__ import annotations

import pytest

from fleet.objectmodel import ResourcePath


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("/3", (3,)),
        ("/3/0", (3, 0)),
        ("/3/0/1", (3, 0, 1)),
        ("/3/0/1/2", (3, 0, 1, 2)),
        ("/3303/0/5700", (3303, 0, 5700)),
        ("/65535/65535/65535/65535", (65535, 65535, 65535, 65535)),
        ("/0/0/0/0", (0, 0, 0, 0)),
    ],
)
def test_parse_and_format_round_trip(text: str, ids: tuple[int, ...]) -> None:
    path = ResourcePath.parse(text)
    assert path.ids == ids
    assert path.depth == len(ids)
    assert str(path) == text


def test_fields_name_each_level() -> None:
    path = ResourcePath.parse("/3/0/7/1")
    assert (path.object, path.instance, path.resource, path.resource_instance) == (3, 0, 7, 1)
    assert path.resource_path() == ResourcePath(3, 0, 7)
    assert path.is_resource_level
    assert not ResourcePath(3, 0).is_resource_level


@pytest.mark.parametrize(
    "text",
    [
        "", "/", "3/0/1", "/3/0/", "//3", "/3//1", "/3/0/1/2/3", "/65536", "/3/-1", "/3/+1",
        "/3/ 1", "/3/1 ", "/03", "/3/00", "/3/0x1", "/3/1.0", "/3/a", "/٣", "/3/0/1?x", "/3\n",
        "/999999",
    ],
)
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        ResourcePath.parse(text)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        ResourcePath.parse(b"/3/0")  # type: ignore[arg-type]


def test_parse_is_cached() -> None:
    assert ResourcePath.parse("/3303/1/5700") is ResourcePath.parse("/3303/1/5700")


@pytest.mark.parametrize(
    "args",
    [(3, None, 1), (3, 0, None, 1), (-1,), (65536,), (3, True), (3, 0, 1.0), ("3",)],
)
def test_constructor_validates(args: tuple) -> None:
    with pytest.raises(ValueError):
        ResourcePath(*args)


def test_child_and_contains() -> None:
    instance = ResourcePath(3303, 0)
    assert instance.child(5700) == ResourcePath(3303, 0, 5700)
    assert instance.contains(ResourcePath(3303, 0, 5700))
    assert instance.contains(instance)
    assert not instance.contains(ResourcePath(3303, 1, 5700))
    assert not instance.contains(ResourcePath(3303))


def test_paths_are_hashable_values() -> None:
    assert {ResourcePath(3, 0, 1), ResourcePath.parse("/3/0/1")} == {ResourcePath(3, 0, 1)}
