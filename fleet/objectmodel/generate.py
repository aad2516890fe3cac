"""Generates catalog_data.py, Fleet's shipped copy of the OMA LwM2M registry, from its XML files.

Run from the repository root:
    python -m fleet.objectmodel.generate /path/to/lwm2m-registry > fleet/objectmodel/catalog_data.py
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from pathlib import Path

from fleet.objectmodel.models import ObjectDef, ResourceDef, ResourceType

_REGISTRY_TYPES = {
    "String": ResourceType.STRING,
    "Integer": ResourceType.INTEGER,
    "Unsigned Integer": ResourceType.UNSIGNED,
    "Float": ResourceType.FLOAT,
    "Boolean": ResourceType.BOOLEAN,
    "Opaque": ResourceType.OPAQUE,
    "Time": ResourceType.TIME,
    "Objlnk": ResourceType.OBJLNK,
    "Corelnk": ResourceType.CORELNK,
    "": ResourceType.NONE,
}

_HEADER = '''\
"""OMA LwM2M object definitions Fleet ships, generated from the registry XML: do not edit."""
# ruff: noqa: E501 - one line per resource reads better than wrapped rows

# Regenerate from the repository root:
#   python -m fleet.objectmodel.generate /path/to/lwm2m-registry > fleet/objectmodel/catalog_data.py
# Object rows:   (id, name, urn, version, multiple, mandatory, resources)
# Resource rows: (id, name, type, operations, multiple, mandatory, units, range)

OBJECTS = (
'''


def parse_registry(directory: Path) -> list[ObjectDef]:
    """Every object defined by the *.xml files of a registry checkout, ordered by id."""
    objects = [parse_object_file(path) for path in sorted(Path(directory).glob("*.xml"))]
    ids = [definition.id for definition in objects]
    if len(set(ids)) != len(ids):
        raise ValueError("the registry defines an object id twice")
    return sorted(objects, key=lambda definition: definition.id)


def parse_object_file(path: Path) -> ObjectDef:
    root = ElementTree.parse(path).getroot()
    element = root.find("Object")
    if element is None:
        raise ValueError(f"{path.name}: no <Object> element")
    resources = {}
    for item in element.iterfind("Resources/Item"):
        resource = _parse_resource(item, path)
        resources[resource.id] = resource
    return ObjectDef(
        id=int(_text(element, "ObjectID")),
        name=_text(element, "Name"),
        urn=_text(element, "ObjectURN"),
        multiple=_text(element, "MultipleInstances") == "Multiple",
        resources=dict(sorted(resources.items())),
        # Objects that predate versioning omit ObjectVersion; the registry reads that as 1.0.
        version=_text(element, "ObjectVersion") or "1.0",
        mandatory=_text(element, "Mandatory") == "Mandatory",
    )


def _parse_resource(item: ElementTree.Element, path: Path) -> ResourceDef:
    type_name = _text(item, "Type")
    if type_name not in _REGISTRY_TYPES:
        raise ValueError(f"{path.name}: resource {item.get('ID')} has unknown type {type_name!r}")
    return ResourceDef(
        id=int(item.get("ID", "")),
        name=_text(item, "Name"),
        type=_REGISTRY_TYPES[type_name],
        operations=_text(item, "Operations"),
        multiple=_text(item, "MultipleInstances") == "Multiple",
        mandatory=_text(item, "Mandatory") == "Mandatory",
        units=_text(item, "Units") or None,
        range=_text(item, "RangeEnumeration") or None,
    )


def _text(element: ElementTree.Element, tag: str) -> str:
    # Registry files are hand-edited: collapse stray runs of whitespace ("LWM2M  Server URI").
    return " ".join((element.findtext(tag) or "").split())


def render(objects: Iterable[ObjectDef]) -> str:
    """The source of catalog_data.py: one line per object header, one per resource."""
    lines = [_HEADER]
    for definition in objects:
        head = (definition.id, definition.name, definition.urn, definition.version,
                definition.multiple, definition.mandatory)
        lines.append(f"    ({_literals(head)}, (\n")
        for resource in definition.resources.values():
            row = (resource.id, resource.name, resource.type.value, resource.operations,
                   resource.multiple, resource.mandatory, resource.units, resource.range)
            lines.append(f"        ({_literals(row)}),\n")
        lines.append("    )),\n")
    lines.append(")\n")
    return "".join(lines)


def _literals(values: Iterable[object]) -> str:
    # json.dumps gives double-quoted, ASCII-escaped strings that are also valid Python literals.
    return ", ".join(json.dumps(v) if isinstance(v, str) else repr(v) for v in values)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m fleet.objectmodel.generate REGISTRY_DIR > catalog_data.py",
              file=sys.stderr)
        return 2
    sys.stdout.write(render(parse_registry(Path(args[0]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
