"""CoRE link format (RFC 6690) as LwM2M registration and discovery payloads use it.

A registration carries `</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>;ver=1.1,</3303/0>`: an
optional root link naming the client's alternate path and content formats, then one link per
object or object instance it hosts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from fleet.objectmodel import ResourcePath
from protocols.lwm2m.errors import CodecError

CONTENT_FORMAT = 40
MAX_LINKS = 1024
MAX_PAYLOAD_BYTES = 64 * 1024
LWM2M_ROOT_TYPE = "oma.lwm2m"

# Targets are absolute paths without query or fragment: "/", "/3/0", "/lwm2m/3303/1".
_TARGET = re.compile(r"/(?:[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*)?")
_PARAM_NAME = re.compile(r"[A-Za-z0-9!#$&+.^_`|~*-]+")  # RFC 5987 parmname, plus "*" of title*
# RFC 6690 ptoken minus "<" and ">": unquoted, they only ever show a missing comma.
_PTOKEN = re.compile(r"[!#$%&'()*+\-./0-9:=?@A-Z\[\]^_`a-z{|}~]+")
_WHITESPACE = " \t\r\n"
# Attributes whose values RFC 6690 and LwM2M examples write quoted even when they need not be.
_ALWAYS_QUOTED = frozenset({"rt", "if", "title", "anchor", "rel", "rev"})
# Attributes that look like numbers but are not: "ver=1.10" is not 1.1.
_TEXT_ATTRIBUTES = _ALWAYS_QUOTED | {"ver", "lwm2m"}


@dataclass(frozen=True, slots=True)
class Link:
    path: str
    attrs: dict[str, str | None] = field(default_factory=dict)


def parse(payload: bytes | str) -> list[Link]:
    """Links of a link-format payload, in order; attrs without "=" map to None."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CodecError("link-format payload is too large")
    if isinstance(payload, str):
        text = payload
    else:
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("link-format payload is not UTF-8") from None
    if "\x00" in text:
        raise CodecError("link-format payload contains a NUL character")
    links: list[Link] = []
    end = len(text)
    pos = _skip_whitespace(text, 0)
    if pos == end:
        return links
    while True:
        if text[pos] != "<":
            raise CodecError(f"expected '<' at offset {pos}")
        close = text.find(">", pos + 1)
        if close < 0:
            raise CodecError(f"unterminated '<' at offset {pos}")
        target = text[pos + 1 : close]
        if not _TARGET.fullmatch(target):
            raise CodecError(f"link target at offset {pos} is not an absolute path")
        attrs, pos = _parse_attrs(text, close + 1)
        links.append(Link(target, attrs))
        if len(links) > MAX_LINKS:
            raise CodecError(f"more than {MAX_LINKS} links")
        pos = _skip_whitespace(text, pos)
        if pos == end:
            return links
        if text[pos] != ",":
            raise CodecError(f"expected ',' or ';' at offset {pos}")
        pos = _skip_whitespace(text, pos + 1)
        if pos == end:
            raise CodecError("trailing ',' after the last link")


def _parse_attrs(text: str, pos: int) -> tuple[dict[str, str | None], int]:
    attrs: dict[str, str | None] = {}
    while pos < len(text) and text[pos] == ";":
        name_match = _PARAM_NAME.match(text, pos + 1)
        if name_match is None:
            raise CodecError(f"missing attribute name at offset {pos + 1}")
        name = name_match.group()
        if name in attrs:
            raise CodecError(f"attribute {name!r} appears twice in one link")
        pos = name_match.end()
        value = None
        if pos < len(text) and text[pos] == "=":
            pos += 1
            if pos < len(text) and text[pos] == '"':
                value, pos = _parse_quoted(text, pos)
            else:
                token = _PTOKEN.match(text, pos)
                if token is None:
                    raise CodecError(f"missing value for attribute {name!r}")
                value, pos = token.group(), token.end()
        attrs[name] = value
    return attrs, pos


def _parse_quoted(text: str, start: int) -> tuple[str, int]:
    chars = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(chars), pos + 1
        if char == "\\":
            pos += 1
            if pos == len(text):
                break
            char = text[pos]
        if char < " " and char != "\t":
            raise CodecError(f"control character in quoted string at offset {pos}")
        chars.append(char)
        pos += 1
    raise CodecError(f"unterminated quoted string at offset {start}")


def _skip_whitespace(text: str, pos: int) -> int:
    # RFC 6690 has no whitespace, but clients put spaces or newlines between links.
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def serialize(links: Iterable[Link]) -> str:
    """The link-format text for links, quoting values only where RFC 6690 needs or expects it."""
    parts = []
    for link in links:
        if not _TARGET.fullmatch(link.path):
            raise CodecError(f"link target {link.path!r} is not an absolute path")
        pieces = [f"<{link.path}>"]
        for name, value in link.attrs.items():
            if not _PARAM_NAME.fullmatch(name):
                raise CodecError(f"invalid attribute name {name!r}")
            if value is None:
                pieces.append(name)
            elif name not in _ALWAYS_QUOTED and _PTOKEN.fullmatch(value):
                pieces.append(f"{name}={value}")
            else:
                escaped = value.replace("\\", "\\\\").replace('"', '\\"')
                pieces.append(f'{name}="{escaped}"')
        parts.append(";".join(pieces))
    return ",".join(parts)


def attribute_values(link: Link) -> dict[str, int | float | str | None]:
    """A link's attributes with numbers as numbers: `pmin=10;gt=20.5;dim=3` as Discover answers them."""
    values: dict[str, int | float | str | None] = {}
    for name, value in link.attrs.items():
        values[name] = _number(value) if value is not None and name not in _TEXT_ATTRIBUTES else value
    return values


def _number(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def root_path(links: Iterable[Link]) -> str:
    """The client's LwM2M root: the path of the rt="oma.lwm2m" link, "/" when there is none."""
    for link in links:
        if link.attrs.get("rt") == LWM2M_ROOT_TYPE:
            return link.path
    return "/"


def content_formats(links: Iterable[Link]) -> list[int]:
    """Content formats the client announced with ct on its root link, e.g. [110, 112]."""
    links = list(links)
    root = root_path(links)
    for link in links:
        if link.path == root and link.attrs.get("ct"):
            try:
                return [int(part) for part in link.attrs["ct"].split()]
            except ValueError:
                raise CodecError("ct is not a list of numbers") from None
    return []


def object_paths(links: Iterable[Link]) -> list[tuple[ResourcePath, Link]]:
    """Each link below the root that names an LwM2M path, with that path made root-relative."""
    links = list(links)
    root = root_path(links).rstrip("/")
    result = []
    for link in links:
        if not link.path.startswith(root + "/") or link.path == root + "/":
            continue
        try:
            result.append((ResourcePath.parse(link.path[len(root) :]), link))
        except ValueError:
            continue  # not an object link: e.g. the root itself, or a vendor resource
    return result


def object_instances(links: Iterable[Link]) -> dict[int, list[int]]:
    """Object id -> instance ids hosted; objects announced without instances map to []."""
    hosted: dict[int, list[int]] = {}
    for path, _link in object_paths(links):
        instances = hosted.setdefault(path.object, [])
        if path.instance is not None and path.instance not in instances:
            instances.append(path.instance)
    return hosted


def object_versions(links: Iterable[Link]) -> dict[int, str]:
    """Object id -> version, for objects whose link carries ver (others are at 1.0)."""
    versions = {}
    for path, link in object_paths(links):
        version = link.attrs.get("ver")
        if version is not None and path.resource is None:
            versions[path.object] = version
    return versions
