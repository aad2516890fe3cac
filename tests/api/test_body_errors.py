"""api.body_errors: every error of a body named by its path, not only msgspec's first."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from msgspec import UNSET, Meta, Struct, UnsetType

from api.body_errors import MAX_ERRORS, MAX_PARTS, body_errors


class Point(Struct):
    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: float


class Spot(Struct, forbid_unknown_fields=True):
    name: str
    at: Point
    tags: list[str] = []
    near: Point | None = None
    ids: Annotated[list[UUID], Meta(max_length=2)] | UnsetType = UNSET
    pair: tuple[int, str] | None = None
    sizes: dict[str, int] = {}


class Ordered(Struct):
    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low must not exceed high")


def test_a_valid_body_has_no_errors():
    assert body_errors({"name": "a", "at": {"lat": 1, "lon": "2.5"}}, Spot) == []  # strict=False, as Litestar


def test_every_type_error_is_named_in_the_order_of_the_body():
    body = {"name": 5, "at": {"lat": "north", "lon": "east"}, "tags": ["a", 1, None]}
    assert body_errors(body, Spot) == [
        ("name", "Expected `str`, got `int`"), ("at.lat", "Expected `float`, got `str`"),
        ("at.lon", "Expected `float`, got `str`"), ("tags[1]", "Expected `str`, got `int`"),
        ("tags[2]", "Expected `str`, got `null`")]


def test_a_missing_field_is_named_as_itself_nested_or_not():
    assert body_errors({"at": {"lat": 1}}, Spot) == [
        ("at.lon", "Object missing required field `lon`"), ("name", "Object missing required field `name`")]


def test_unknown_fields_stay_refused_and_are_named():
    assert body_errors({"name": "a", "at": {"lat": 1, "lon": 2}, "colour": "red"}, Spot) == [
        ("colour", "Object contains unknown field `colour`")]


def test_constraints_optional_members_tuples_and_dicts():
    body = {"name": "a", "at": {"lat": 91, "lon": 0}, "near": {"lat": "x", "lon": 0},
            "ids": ["nope"], "pair": [1, 2], "sizes": {"big": "x"}}
    assert body_errors(body, Spot) == [
        ("at.lat", "Expected `float` <= 90.0"), ("near.lat", "Expected `float`, got `str`"),
        ("ids[0]", "Invalid UUID"), ("pair[1]", "Expected `str`, got `int`"),
        ("sizes.big", "Expected `int`, got `str`")]


def test_a_constraint_of_the_whole_shows_once_its_parts_are_right():
    three = [str(UUID(int=n)) for n in range(3)]
    assert body_errors({"name": "a", "at": {"lat": 0, "lon": 0}, "ids": three}, Spot) == [
        ("ids", "Expected `array` of length <= 2")]
    assert body_errors({"low": "x", "high": 1}, Ordered) == [("low", "Expected `int`, got `str`")]
    assert body_errors({"low": 2, "high": 1}, Ordered) == [("body", "low must not exceed high")]


def test_a_long_list_of_errors_stops_at_the_limit():
    body = {"name": "a", "at": {"lat": 0, "lon": 0}, "tags": list(range(1000))}
    found = body_errors(body, Spot)
    assert len(found) == MAX_ERRORS and found[-1] == (f"tags[{MAX_ERRORS - 1}]", "Expected `str`, got `int`")
    assert body_errors(body, Spot, limit=2) == [("tags[0]", "Expected `str`, got `int`"),
                                                ("tags[1]", "Expected `str`, got `int`")]


def test_a_body_of_the_wrong_shape_is_the_body():
    assert body_errors([], Spot) == [("body", "Expected `object`, got `array`")]
    assert body_errors({"name": "a", "at": None}, Spot) == [("at", "Expected `object`, got `null`")]
    assert body_errors(None, Spot | None) == []


class Shout(str):
    pass


class Said(Struct):
    word: Shout


def test_the_decoders_hook_is_used():
    def dec_hook(kind, value):
        if kind is Shout and isinstance(value, str):
            return Shout(value.upper())
        raise TypeError(f"Unsupported type: {type(value)!r}")

    assert body_errors({"word": "hi"}, Said, dec_hook) == []
    assert body_errors({"word": 1}, Said, dec_hook) == [("word", "Unsupported type: <class 'int'>")]


def test_a_huge_body_is_looked_into_only_so_far():
    # Past MAX_PARTS items the walk stops (each item is converted again on its own: a million
    # would hold the event loop for seconds); msgspec's first error names what it did not reach.
    far = ["a"] * (MAX_PARTS + 10) + [5]
    assert body_errors({"name": 5, "at": {"lat": 0, "lon": 0}, "tags": far}, Spot) == [
        ("name", "Expected `str`, got `int`"), (f"tags[{MAX_PARTS + 10}]", "Expected `str`, got `int`")]
    both = [5] + ["a"] * MAX_PARTS + [6]
    assert [field for field, _ in body_errors({"name": "a", "at": {"lat": 0, "lon": 0}, "tags": both}, Spot)] == [
        "tags[0]"]
