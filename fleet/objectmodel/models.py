"""The LwM2M object model: object and resource definitions, paths, readings, the catalog."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple

MAX_ID = 65535


class ResourceType(StrEnum):
    """Data types of LwM2M 1.1 resources; NONE is what executable resources have."""

    STRING = "string"
    INTEGER = "integer"
    UNSIGNED = "unsigned"
    FLOAT = "float"
    BOOLEAN = "boolean"
    OPAQUE = "opaque"
    TIME = "time"
    OBJLNK = "objlnk"
    CORELNK = "corelnk"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ResourceDef:
    id: int
    name: str
    type: ResourceType
    operations: str  # "R", "RW", "W", "E", or "" for resources only a bootstrap server touches
    multiple: bool
    mandatory: bool
    units: str | None
    range: str | None  # the registry's RangeEnumeration text, e.g. "0..100" or "ON;OFF"

    @property
    def readable(self) -> bool:
        return "R" in self.operations

    @property
    def writable(self) -> bool:
        return "W" in self.operations

    @property
    def executable(self) -> bool:
        return "E" in self.operations


@dataclass(frozen=True, slots=True)
class ObjectDef:
    id: int
    name: str
    urn: str
    multiple: bool
    resources: dict[int, ResourceDef]
    version: str = "1.0"
    mandatory: bool = False


@dataclass(frozen=True, slots=True)
class ResourcePath:
    """A path into a device's object tree: /object[/instance[/resource[/resource_instance]]]."""

    object: int
    instance: int | None = None
    resource: int | None = None
    resource_instance: int | None = None

    def __post_init__(self) -> None:
        levels = (self.object, self.instance, self.resource, self.resource_instance)
        seen_gap = False
        for level in levels:
            if level is None:
                seen_gap = True
            elif seen_gap:
                raise ValueError("a path level is set below a missing one")
            elif type(level) is not int or not 0 <= level <= MAX_ID:
                raise ValueError(f"path ids must be integers in 0..{MAX_ID}")

    @staticmethod
    @lru_cache(maxsize=8192)
    def parse(text: str) -> ResourcePath:
        """Parse "/3/0/1" or "/3/0/1/2" (1 to 4 levels); cached because devices repeat paths."""
        if type(text) is not str or not text.startswith("/"):
            raise ValueError("a path starts with '/'")
        parts = text[1:].split("/")
        if len(parts) > 4:
            raise ValueError("a path has at most 4 levels")
        ids = []
        for part in parts:
            # Leading zeros are refused so that parse and str() round-trip exactly.
            if not (0 < len(part) <= 5 and part.isascii() and part.isdigit()) or (
                part[0] == "0" and len(part) > 1
            ):
                raise ValueError("path levels are decimal ids without leading zeros")
            ids.append(int(part))
        return ResourcePath(*ids)

    @property
    def ids(self) -> tuple[int, ...]:
        levels = (self.object, self.instance, self.resource, self.resource_instance)
        return tuple(level for level in levels if level is not None)

    @property
    def depth(self) -> int:
        return len(self.ids)

    @property
    def is_resource_level(self) -> bool:
        """True for a resource or a resource instance: the paths that carry values."""
        return self.resource is not None

    def child(self, child_id: int) -> ResourcePath:
        return ResourcePath(*self.ids, child_id)

    def resource_path(self) -> ResourcePath:
        """This path without its resource instance."""
        return ResourcePath(self.object, self.instance, self.resource)

    def contains(self, other: ResourcePath) -> bool:
        """True when other is this path or lies below it."""
        mine = self.ids
        return other.ids[: len(mine)] == mine

    def __str__(self) -> str:
        return "/" + "/".join(map(str, self.ids))


class Reading(NamedTuple):
    """One value of one resource, with when it was measured if the device said so.

    A NamedTuple rather than a dataclass: decoders build one per data point on the ingest path.
    """

    path: ResourcePath
    time: datetime | None
    value: object


@dataclass(frozen=True, slots=True)
class Description:
    """What a path means to a person: the object's name, and for resources name, units, type."""

    object_name: str
    name: str
    units: str | None
    type: ResourceType | None


ObjectRow = tuple[int, str, str, str, bool, bool, Sequence[tuple]]


class Catalog:
    """The object definitions the server knows, looked up by id or path."""

    __slots__ = ("_objects",)

    def __init__(self, objects: Iterable[ObjectDef]) -> None:
        self._objects = {definition.id: definition for definition in objects}

    @classmethod
    def from_rows(cls, rows: Iterable[ObjectRow]) -> Catalog:
        """Build from the compact tuples of catalog_data (its header names the columns)."""
        objects = []
        for object_id, name, urn, version, multiple, mandatory, resource_rows in rows:
            resources = {
                row[0]: ResourceDef(row[0], row[1], ResourceType(row[2]), *row[3:])
                for row in resource_rows
            }
            objects.append(ObjectDef(object_id, name, urn, multiple, resources, version, mandatory))
        return cls(objects)

    def object(self, object_id: int) -> ObjectDef | None:
        return self._objects.get(object_id)

    def resource(self, object_id: int, resource_id: int) -> ResourceDef | None:
        definition = self._objects.get(object_id)
        return None if definition is None else definition.resources.get(resource_id)

    def resource_at(self, path: ResourcePath) -> ResourceDef | None:
        if path.resource is None:
            return None
        return self.resource(path.object, path.resource)

    def describe(self, path: ResourcePath | str) -> Description | None:
        """Name, units and type of what a path points at; None when the catalog lacks it."""
        if isinstance(path, str):
            path = ResourcePath.parse(path)
        definition = self._objects.get(path.object)
        if definition is None:
            return None
        if path.resource is None:
            return Description(definition.name, definition.name, None, None)
        resource = definition.resources.get(path.resource)
        if resource is None:
            return None
        return Description(definition.name, resource.name, resource.units, resource.type)

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._objects

    def __iter__(self) -> Iterator[ObjectDef]:
        return iter(self._objects.values())

    def __len__(self) -> int:
        return len(self._objects)
