"""LwM2M objects and resources as Fleet knows them: definitions, paths, typed values, catalog."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from fleet.objectmodel.coerce import coerce, parse_objlnk
from fleet.objectmodel.models import (
    Catalog,
    Description,
    ObjectDef,
    Reading,
    ResourceDef,
    ResourcePath,
    ResourceType,
)

if TYPE_CHECKING:
    CATALOG: Catalog

__all__ = [
    "CATALOG",
    "Catalog",
    "Description",
    "ObjectDef",
    "Reading",
    "ResourceDef",
    "ResourcePath",
    "ResourceType",
    "coerce",
    "parse_objlnk",
]


@cache
def _shipped_catalog() -> Catalog:
    from fleet.objectmodel.catalog_data import OBJECTS

    return Catalog.from_rows(OBJECTS)


def __getattr__(name: str) -> object:
    # CATALOG is built on first use, not at import: the generator imports this package while
    # the shell has already truncated catalog_data.py for its output.
    if name == "CATALOG":
        return _shipped_catalog()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
