"""Open311 GeoReport v2 on the wire: its documents as msgspec Structs, their XML form, and its errors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import msgspec
from litestar import Response
from litestar.openapi.spec import OpenAPIMediaType, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIType

from fleet.reports.models import Attribute, Filed, Service, ServiceRequest

JSON = "application/json; charset=utf-8"
XML = "text/xml"  # Litestar adds "; charset=utf-8" to text types
_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'
# Spark convention (GeoReport v2): a list is an element of its plural name holding one element per item.
_ITEM_NAMES = {"services": "service", "attributes": "attribute", "values": "value",
               "service_requests": "request", "errors": "error"}


class Open311Service(msgspec.Struct):
    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: str
    keywords: str
    group: str


class Open311Value(msgspec.Struct):
    key: str
    name: str


class Open311Attribute(msgspec.Struct):
    variable: bool
    code: str
    datatype: str
    required: bool
    datatype_description: str | None
    order: int
    description: str
    values: list[Open311Value]


class Open311ServiceDefinition(msgspec.Struct):
    service_code: str
    attributes: list[Open311Attribute]


class Open311Created(msgspec.Struct):
    """POST's answer; `account_id` is never echoed (a citizen's account is personal data)."""

    service_request_id: str
    service_notice: str | None
    account_id: None = None


class Open311Request(msgspec.Struct):
    """A service request as anyone may read it: no contact field exists here to leak."""

    service_request_id: str
    status: str
    status_notes: str | None
    service_name: str | None
    service_code: str
    description: str | None
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: str
    updated_datetime: str
    expected_datetime: str | None
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float | None
    long: float | None
    media_url: str | None


class Open311Error(msgspec.Struct):
    code: int
    description: str


class Open311Failure(Exception):
    """An error answered in GeoReport v2's own format, not problem+json."""

    def __init__(self, status: int, description: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers


def service_out(service: Service) -> Open311Service:
    return Open311Service(service.code, service.name, service.description, bool(service.attributes),
                          "realtime", service.keywords, service.group)


def _attribute_out(attribute: Attribute) -> Open311Attribute:
    return Open311Attribute(True, attribute.code, attribute.datatype.value, attribute.required,
                            attribute.datatype_description, attribute.order, attribute.description,
                            [Open311Value(key, name) for key, name in attribute.values])


def definition_out(service: Service) -> Open311ServiceDefinition:
    return Open311ServiceDefinition(service.code, [_attribute_out(a) for a in service.attributes])


def created_out(filed: Filed) -> Open311Created:
    return Open311Created(filed.service_request_id, filed.service_notice)


def w3c(at: datetime, timezone: ZoneInfo) -> str:
    """ISO 8601 as the W3C note has it, in the city's time with its offset (GeoReport v2)."""
    return at.astimezone(timezone).isoformat(timespec="seconds")


def request_out(request: ServiceRequest, timezone: ZoneInfo) -> Open311Request:
    service = request.service
    return Open311Request(
        service_request_id=request.service_request_id, status=request.status.value,
        status_notes=request.status_notes, service_name=service.name if service else None,
        service_code=request.service_code, description=request.description or None, agency_responsible=None,
        service_notice=service.service_notice if service else None,
        requested_datetime=w3c(request.requested_at, timezone), updated_datetime=w3c(request.updated_at, timezone),
        expected_datetime=w3c(request.expected_at, timezone) if request.expected_at else None,
        address=request.address, address_id=request.address_id, zipcode=None,
        lat=request.lat, long=request.lon, media_url=request.media_url)


# Characters XML 1.0 cannot hold at all, not even escaped: one citizen's description with a
# control character would otherwise make the city's whole requests.xml unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _append(parent: ElementTree.Element, name: str, value: Any) -> None:
    element = ElementTree.SubElement(parent, name)
    if isinstance(value, list):
        for item in value:
            _append(element, _ITEM_NAMES[name], item)
    elif isinstance(value, dict):
        for key, inner in value.items():
            _append(element, key, inner)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:  # null is an empty element, as in the specification's examples
        element.text = _NOT_XML.sub("\ufffd", str(value))


def to_xml(root: str, document: msgspec.Struct | Sequence[msgspec.Struct]) -> bytes:
    """`services`/`service`, `service_requests`/`request`, `errors`/`error`, or a lone
    `service_definition`; UTF-8 with the declaration the specification asks for."""
    builtins = msgspec.to_builtins(document)
    element = ElementTree.Element(root)
    if isinstance(builtins, list):
        for item in builtins:
            _append(element, _ITEM_NAMES[root], item)
    else:
        for key, value in builtins.items():
            _append(element, key, value)
    return _DECLARATION + ElementTree.tostring(element, encoding="unicode").encode()


def render(format_: str, root: str, document: Any, status: int = 200,
           headers: dict[str, str] | None = None) -> Response:
    if format_ == "xml":
        return Response(to_xml(root, document), status_code=status, media_type=XML, headers=headers)
    return Response(msgspec.json.encode(document), status_code=status, media_type=JSON, headers=headers)


def failure(format_: str, status: int, description: str, headers: dict[str, str] | None = None) -> Response:
    # Descriptions may quote the request (a parameter, the path with its query): kept short.
    return render(format_, "errors", [Open311Error(status, description[:500])], status, headers)


def split_format(last_segment: str) -> tuple[str, str]:
    """`streetlight_out.json` → (`streetlight_out`, `json`); the format is part of the path."""
    name, dot, format_ = last_segment.rpartition(".")
    if not dot or format_ not in ("json", "xml"):
        raise Open311Failure(404, "append .json or .xml to the resource")
    return name, format_


@dataclass
class Open311Operation(Operation):
    """Open311 operations take no bearer key (POST carries `api_key` in its form), and answer
    XML as well as JSON: every response documents both."""

    def __post_init__(self) -> None:
        self.security = []
        for response in (self.responses or {}).values():
            content = getattr(response, "content", None)
            if content is not None and "text/xml" not in content:
                content["text/xml"] = OpenAPIMediaType(schema=Schema(
                    type=OpenAPIType.STRING, description="the same document as XML (GeoReport v2)"))
