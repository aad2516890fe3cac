"""Every error in a decoded request body, where msgspec stops at the first one."""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

# msgspec ends a message with where the error is, relative to the value converted.
_AT = re.compile(r" - at `\$(?P<path>.*)`$")
_SEQUENCES = (list, tuple, set, frozenset)
# A body of a million wrong items is answered with the first ones, not a response larger than it.
MAX_ERRORS = 100
# Each part is converted again on its own: a body of a million right items and one wrong one
# would take a million conversions (seconds of the event loop for 16 MiB) to find what the first
# conversion already named. Past this many items, msgspec's first error stands for the rest.
MAX_PARTS = 10_000

Errors = Iterator[tuple[str, str]]


@dataclass(slots=True)
class _Walk:
    dec_hook: Callable[[type, Any], Any] | None
    parts_left: int  # items of arrays and objects still to look into, in the whole body


def body_errors(value: Any, target: Any, dec_hook: Callable[[type, Any], Any] | None = None,
                limit: int = MAX_ERRORS) -> list[tuple[str, str]]:
    """(field, message) for each error converting `value` (decoded JSON) to `target` as Litestar
    does (strict=False), in the order of the body's keys, missing fields after; a field is
    named as a path such as `location.lat` or `device_ids[2]`, the body itself as `body`.
    Each field is converted apart, so one wrong field does not hide the next one."""
    found = islice(_errors(value, target, "", _Walk(dec_hook, MAX_PARTS)), limit)
    return [(path.lstrip(".") or "body", message) for path, message in found]


def _errors(value: Any, target: Any, path: str, walk: _Walk) -> Errors:
    if isinstance(value, (list, dict)) and walk.parts_left <= 0:
        return  # the caller reports msgspec's first error for the whole instead
    try:
        msgspec.convert(value, target, strict=False, str_keys=True, dec_hook=walk.dec_hook)
        return
    except msgspec.ValidationError as exc:
        first = str(exc)
    found = False
    for error in _parts(value, target, path, walk):
        found = True
        yield error
    if not found:
        # A constraint of the whole (a Struct's __post_init__, a list's length) shows once its parts are right.
        yield _located(path, first)


def _located(path: str, message: str) -> tuple[str, str]:
    if match := _AT.search(message):
        return path + match["path"], message[:match.start()]
    return path, message


def _parts(value: Any, target: Any, path: str, walk: _Walk) -> Errors:
    origin, args = get_origin(target), get_args(target)
    if origin is Annotated:
        yield from _parts(value, args[0], path, walk)
    elif origin in (Union, types.UnionType):
        # Only when the value's shape picks one member: `Location | None` given an object.
        shaped = [a for a in args if _shape(a) is not None and isinstance(value, _shape(a))]
        if len(shaped) == 1:
            yield from _parts(value, shaped[0], path, walk)
    elif isinstance(target, type) and issubclass(target, msgspec.Struct):
        if isinstance(value, dict):
            yield from _struct(value, target, path, walk)
    elif origin in _SEQUENCES and isinstance(value, list):
        fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
        if fixed and len(args) != len(value):
            return
        kinds = args if fixed else [args[0] if args else Any] * len(value)
        for i, (item, kind) in enumerate(zip(value, kinds, strict=True)):
            if walk.parts_left <= 0:
                return
            walk.parts_left -= 1
            yield from _errors(item, kind, f"{path}[{i}]", walk)
    elif origin is dict and isinstance(value, dict) and len(args) == 2:
        for key, item in value.items():
            if walk.parts_left <= 0:
                return
            walk.parts_left -= 1
            yield from _errors(item, args[1], f"{path}.{key}", walk)


def _shape(target: Any) -> type | None:
    """The JSON shape a type is decoded from when it has parts to look into."""
    origin = get_origin(target)
    if origin is Annotated:
        return _shape(get_args(target)[0])
    if (isinstance(target, type) and issubclass(target, msgspec.Struct)) or origin is dict:
        return dict
    if origin in _SEQUENCES:
        return list
    return None


def _struct(value: dict, target: type[msgspec.Struct], path: str, walk: _Walk) -> Errors:
    config = target.__struct_config__
    fields = {f.encode_name: f for f in msgspec.structs.fields(target)}
    for key, item in value.items():
        if key in fields:
            yield from _errors(item, fields[key].type, f"{path}.{key}", walk)
        elif config.forbid_unknown_fields and key != config.tag_field:
            yield f"{path}.{key}", f"Object contains unknown field `{key}`"
    for name, field in fields.items():
        if field.required and name not in value:
            yield f"{path}.{name}", f"Object missing required field `{name}`"
