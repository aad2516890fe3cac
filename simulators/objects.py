"""A simulated device's LwM2M object tree: Read, Write, Execute and Discover over its resources.

A tree is built once per kind of device (and variant, e.g. a dual-band access point) and shared
by all devices of that kind; its resources are functions of the device, so a device holds only
its own physical state. Values are encoded with Fleet's own codecs (protocols.lwm2m), the same
ones the server decodes with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple

from fleet.objectmodel import CATALOG, Reading, ResourcePath, coerce
from protocols.lwm2m import content, linkformat, lwm2m_cbor, senml, tlv
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.values import objlnk_text
from protocols.coap import message as coap

LINK_FORMAT = 40
# Objects the core specification defines for LwM2M 1.1 are announced without a version.
CORE_OBJECTS = frozenset({0, 1, 2, 3, 4, 5})
READ_FORMATS = (content.SENML_CBOR, content.SENML_JSON, content.LWM2M_TLV, content.LWM2M_CBOR,
                content.TEXT_PLAIN)
WRITE_FORMATS = (content.SENML_CBOR, content.SENML_JSON, content.LWM2M_TLV, content.LWM2M_CBOR,
                 content.TEXT_PLAIN, content.OPAQUE)


class RequestError(Exception):
    """A request the device refuses; renders as its CoAP code with a short diagnostic."""

    code = coap.BAD_REQUEST

    def __init__(self, diagnostic: str) -> None:
        super().__init__(diagnostic)
        self.diagnostic = diagnostic


class BadRequest(RequestError):
    code = coap.BAD_REQUEST


class NotFound(RequestError):
    code = coap.NOT_FOUND


class MethodNotAllowed(RequestError):
    code = coap.METHOD_NOT_ALLOWED


class NotAcceptable(RequestError):
    code = coap.NOT_ACCEPTABLE


class UnsupportedContentFormat(RequestError):
    code = coap.UNSUPPORTED_CONTENT_FORMAT


class Resource(NamedTuple):
    """How a device implements one resource. read returns a value, or {instance: value} for a
    multiple resource; write takes the value already typed by the catalog."""

    read: Callable[[Any], object] | None = None
    write: Callable[[Any, object], None] | None = None
    execute: Callable[[Any, bytes], None] | None = None


def readable(getter: Callable[[Any], object]) -> Resource:
    return Resource(read=getter)


def attribute(name: str, *, writable: bool = False) -> Resource:
    """A resource backed by one attribute of the device."""
    def read(device: Any) -> object:
        return getattr(device, name)

    def write(device: Any, value: object) -> None:
        setattr(device, name, value)

    return Resource(read=read, write=write if writable else None)


def constant(value: object) -> Resource:
    return Resource(read=lambda _device: value)


def executable(action: Callable[[Any, bytes], None]) -> Resource:
    return Resource(execute=action)


InstanceTable = dict[int, Resource]


class ObjectTree:
    def __init__(self, instances: dict[tuple[int, int], InstanceTable]) -> None:
        for (object_id, _instance), table in instances.items():
            for resource_id in table:
                if CATALOG.resource(object_id, resource_id) is None:
                    raise ValueError(f"/{object_id}/x/{resource_id} is not in the catalog")
        self.instances = instances
        self.objects: dict[int, list[int]] = {}
        for object_id, instance in sorted(instances):
            self.objects.setdefault(object_id, []).append(instance)
        self.registration_links = self._registration_links().encode()

    # -- registration and discovery ------------------------------------------------------------

    def _registration_links(self) -> str:
        formats = " ".join(str(f) for f in (content.SENML_JSON, content.SENML_CBOR,
                                            content.LWM2M_TLV, content.LWM2M_CBOR))
        links = [linkformat.Link("/", {"rt": linkformat.LWM2M_ROOT_TYPE, "ct": formats})]
        for object_id, instances in self.objects.items():
            version = CATALOG.object(object_id).version
            for instance in instances:
                attrs = ({"ver": version} if object_id not in CORE_OBJECTS and version != "1.0"
                         and instance == instances[0] else {})
                links.append(linkformat.Link(f"/{object_id}/{instance}", attrs))
        return linkformat.serialize(links)

    def discover(self, path: ResourcePath) -> bytes:
        """Discover (LwM2M TS 6.3.2): the object, instances and resources below path."""
        if path.depth > 3:
            raise BadRequest("discover takes an object, instance or resource path")
        self._require(path)
        links = [linkformat.Link(str(path))] if path.depth == 1 else []
        for (object_id, instance), table in self.instances.items():
            if object_id != path.object or path.instance not in (None, instance):
                continue
            if path.depth <= 2:
                links.append(linkformat.Link(f"/{object_id}/{instance}"))
            for resource_id in table:
                if path.resource in (None, resource_id):
                    links.append(linkformat.Link(f"/{object_id}/{instance}/{resource_id}"))
        return linkformat.serialize(links).encode()

    # -- read ---------------------------------------------------------------------------------

    def _require(self, path: ResourcePath) -> InstanceTable | None:
        if path.object not in self.objects:
            raise NotFound(f"object {path.object} is not hosted")
        if path.instance is None:
            return None
        table = self.instances.get((path.object, path.instance))
        if table is None:
            raise NotFound(f"no instance {path.object}/{path.instance}")
        if path.resource is not None and path.resource not in table:
            raise NotFound(f"{path.resource_path()} is not implemented")
        return table

    def value(self, device: Any, path: ResourcePath) -> object:
        """The current value of one readable resource (the fast path of a Send)."""
        return self.instances[(path.object, path.instance)][path.resource].read(device)

    def readings(self, device: Any, path: ResourcePath) -> list[Reading]:
        table = self._require(path)
        if path.resource is not None:
            resource = table[path.resource]
            if resource.read is None:
                raise MethodNotAllowed(f"{path.resource_path()} is not readable")
            found = _expand(path.resource_path(), resource.read(device))
            if path.resource_instance is not None:
                found = [r for r in found if r.path == path]
                if not found:
                    raise NotFound(f"no resource instance {path}")
            return found
        readings: list[Reading] = []
        for (object_id, instance), instance_table in self.instances.items():
            if object_id != path.object or path.instance not in (None, instance):
                continue
            for resource_id, resource in instance_table.items():
                if resource.read is not None:
                    readings += _expand(ResourcePath(object_id, instance, resource_id),
                                        resource.read(device))
        return readings

    # -- write --------------------------------------------------------------------------------

    def write(self, device: Any, path: ResourcePath, values: Iterable[Reading]) -> list[ResourcePath]:
        """Write every value below path (all checked before any is applied); returns their paths."""
        if path.instance is None:
            raise MethodNotAllowed("write takes an object instance or resource path")
        self._require(path)
        planned: dict[ResourcePath, tuple[Resource, object]] = {}
        multiples: dict[ResourcePath, dict[int, object]] = {}
        for reading in values:
            target = reading.path
            if not path.contains(target):
                raise BadRequest(f"{target} is not below {path}")
            table = self._require(target)
            resource = table[target.resource]
            definition = CATALOG.resource_at(target)
            if resource.write is None:
                raise MethodNotAllowed(f"{target.resource_path()} is not writable")
            value = _typed(definition, target, reading.value)
            if target.resource_instance is not None:
                multiples.setdefault(target.resource_path(), {})[target.resource_instance] = value
                planned[target.resource_path()] = (resource, None)
            else:
                planned[target] = (resource, value)
        if not planned:
            raise BadRequest("nothing to write")
        for target, (resource, value) in planned.items():
            resource.write(device, multiples.get(target, value))
        return list(planned)

    # -- execute ------------------------------------------------------------------------------

    def execute(self, device: Any, path: ResourcePath, arguments: bytes) -> None:
        if path.resource is None or path.resource_instance is not None:
            raise MethodNotAllowed("execute takes a resource path")
        resource = self._require(path)[path.resource]
        if resource.execute is None:
            raise MethodNotAllowed(f"{path} is not executable")
        resource.execute(device, arguments)


def _expand(path: ResourcePath, value: object) -> list[Reading]:
    if isinstance(value, dict):
        return [Reading(path.child(ri), None, v) for ri, v in value.items()]
    return [Reading(path, None, value)]


def _typed(definition, path: ResourcePath, raw: object) -> object:
    if definition is None:
        return raw
    try:
        value = coerce(definition, raw)
    except ValueError as exc:
        raise BadRequest(f"{path}: {exc}") from None
    low_high = _numeric_range(definition.range)
    if low_high is not None and isinstance(value, int | float) and not isinstance(value, bool):
        low, high = low_high
        if not low <= value <= high:
            raise BadRequest(f"{path}: {value} is outside {definition.range}")
    return value


def _numeric_range(text: str | None) -> tuple[float, float] | None:
    if not text or ".." not in text:
        return None
    low, _, high = text.partition("..")
    try:
        return float(low), float(high)
    except ValueError:
        return None


# -- content formats --------------------------------------------------------------------------

def encode(readings: list[Reading], path: ResourcePath, accept: int | None) -> tuple[int, bytes]:
    """(content format, payload) of a read response or notification, per the Accept option."""
    fmt = content.SENML_CBOR if accept is None else accept
    try:
        if fmt == content.SENML_CBOR:
            return fmt, senml.encode_cbor(readings)
        if fmt == content.SENML_JSON:
            return fmt, senml.encode_json(readings)
        if fmt == content.LWM2M_TLV:
            return fmt, tlv.encode([(r.path, r.value) for r in readings], path, CATALOG)
        if fmt == content.LWM2M_CBOR:
            return fmt, lwm2m_cbor.encode([(r.path, r.value) for r in readings])
        if fmt == content.TEXT_PLAIN:
            if len(readings) != 1 or readings[0].path != path or not path.is_resource_level:
                raise NotAcceptable("text/plain carries a single resource value")
            return fmt, _plain_text(readings[0].value)
    except CodecError as exc:
        raise NotAcceptable(f"cannot encode as {fmt}: {exc}") from None
    raise NotAcceptable(f"content format {fmt} is not supported")


def _plain_text(value: object) -> bytes:
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, datetime):
        return str(int(value.timestamp())).encode()
    if isinstance(value, tuple):
        return objlnk_text(value).encode()
    if isinstance(value, bytes):
        raise NotAcceptable("opaque values are not text")
    return str(value).encode()


def decode_write(content_format: int | None, payload: bytes, path: ResourcePath,
                 now: datetime) -> list[Reading]:
    """The values of a Write request, in any format Fleet can send."""
    if content_format not in WRITE_FORMATS and content_format is not None:
        raise UnsupportedContentFormat(f"content format {content_format} is not supported")
    if content_format is None:
        raise BadRequest("a write needs a Content-Format")
    try:
        return content.decode(content_format, payload, path, now)
    except CodecError as exc:
        raise BadRequest(str(exc)) from None
