"""Which objects and instances a device hosts, by the links it registered: a path it lacks is skipped."""

from __future__ import annotations

import re

from fleet.objectmodel import ResourcePath

# Each link's target and its attributes, up to the next link; the registration was parsed and
# checked when it arrived (protocols/lwm2m/linkformat.py), so a light reading is enough here.
_LINK = re.compile(r"<([^>]*)>([^,<]*)")
_ROOT_TYPE = re.compile(r"""rt\s*=\s*"?oma\.lwm2m""")
PATH_NOT_HOSTED = "path_not_hosted"
# LwM2M 1.1 (core 6.2.1): a client never lists its Security (0) and OSCORE (21) objects when it
# registers, so their absence from the links says nothing.
NEVER_REGISTERED = frozenset({0, 21})


def hosted(object_links: str) -> frozenset[tuple[int, int | None]]:
    """(object, instance) of each link, (object, None) for an object without instances; the
    client's alternate root (`</lwm2m>;rt="oma.lwm2m"`) taken off. Empty when nothing is known."""
    links = _LINK.findall(object_links or "")
    root = next((target.rstrip("/") for target, attrs in links if _ROOT_TYPE.search(attrs)), "")
    found: set[tuple[int, int | None]] = set()
    for target, _ in links:
        if root and target.startswith(root + "/"):
            target = target[len(root):]
        parts = target.strip("/").split("/")
        if not parts[0].isdigit() or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            continue
        found.add((int(parts[0]), int(parts[1]) if len(parts) == 2 else None))
    return frozenset(found)


def lacks(path: ResourcePath, objects: frozenset[tuple[int, int | None]]) -> str | None:
    """The object or instance of `path` a device with these links does not host, as a path
    ("/3311" or "/3311/0"); None when it hosts it, or when its links say nothing."""
    if not objects or path.object in NEVER_REGISTERED:
        return None
    if all(o != path.object for o, _ in objects):
        return f"/{path.object}"
    if path.instance is None or (path.object, path.instance) in objects:
        return None
    return f"/{path.object}/{path.instance}"
