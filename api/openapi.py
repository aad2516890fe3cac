"""What the OpenAPI document says beyond the handlers' signatures, and the docs UI served offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec.inspect
import swagger_ui_bundle
from litestar import Litestar, Router
from litestar.constants import RESERVED_KWARGS
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.enums import ParamType
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Parameter, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

from api.problems import problems

API_PREFIX = "/api/v1/"
DOCS_PATH = "/schema"
# Under /schema so the assets are as public as the page that loads them.
ASSETS_PATH = f"{DOCS_PATH}/assets"
# api.idempotency reads it on every POST, outside the handlers, so no signature declares it.
IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key", param_in=ParamType.HEADER, required=False,
    description="Any 1-255 visible ASCII characters, new per intended request: a retry with the same key "
                "and body gets the first response again (header `Idempotent-Replayed: true`) instead of a "
                "second effect, for a day; 409 while the first is still running, 422 if the key was used "
                "for a different request. A 5xx is not kept, so its retry runs again.",
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255, pattern="^[!-~]{1,255}$"))


def document_problems(app: Litestar) -> None:
    """Declares the problems every API operation can answer with, by what the operation takes.

    Handlers name the statuses only their logic produces (403, 409, 422, ...) in `responses=`;
    the ones that follow from the route's shape are added here, so none is forgotten:
    401, 429 and 503 (no database connection free in time, fleet.db) everywhere, 400 for any
    input, 404 for a path naming a resource, 413 for a body, 409 and 422 for an Idempotency-Key
    on a POST."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith(API_PREFIX):
            continue
        for handler in route.route_handlers:
            if not handler.include_in_schema:
                continue
            statuses = [401, 429, 503]
            inputs = set(handler.parsed_fn_signature.parameters) - set(handler.resolve_dependencies())
            takes_body = "data" in inputs
            if takes_body or inputs - RESERVED_KWARGS:
                statuses.append(400)
            if route.path_parameters:
                statuses.append(404)
            if takes_body:
                statuses.append(413)
            if "POST" in handler.http_methods:
                # Idempotency-Key (api.idempotency): another request under the key, or it is running.
                statuses += [409, 422]
                handler.operation_class = _taking_idempotency_key(handler.operation_class)
            handler.responses = {**problems(*statuses), **(handler.responses or {})}


_IDEMPOTENT: dict[type[Operation], type[Operation]] = {}


def _taking_idempotency_key(operation_class: type[Operation]) -> type[Operation]:
    """The operation class, extended to list the Idempotency-Key header after its own parameters."""
    if operation_class in _IDEMPOTENT.values():
        return operation_class
    if operation_class not in _IDEMPOTENT:
        inherited = getattr(operation_class, "__post_init__", None)

        def __post_init__(self: Operation) -> None:
            if inherited is not None:
                inherited(self)
            self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]

        _IDEMPOTENT[operation_class] = dataclass(type(f"Idempotent{operation_class.__name__}", (operation_class,),
                                                      {"__post_init__": __post_init__}))
    return _IDEMPOTENT[operation_class]


class StructRulesPlugin(StructSchemaPlugin):
    """Says in the schema what msgspec enforces beyond field types: unknown fields refused
    (`forbid_unknown_fields`), a Struct's `__exactly_one_of__`: one of those fields, not null,
    and bounds of 0 on optional numbers, which Litestar 2 drops (it tests the bound for truth).

    msgspec cannot decode an untagged union of Structs, so exactly-one stays in the domain's
    validation; this keeps the document saying it too."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        struct = field_definition.type_
        if struct.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        _restore_zero_bounds(struct, schema)
        if names := getattr(struct, "__exactly_one_of__", None):
            null = Schema(type=OpenAPIType.NULL)
            schema.one_of = [Schema(required=[name], properties={
                other: Schema(schema_not=null) if other == name else null for other in names}) for name in names]
        return schema


_BOUNDS = {"ge": "minimum", "gt": "exclusive_minimum", "le": "maximum", "lt": "exclusive_maximum"}


def _unwrapped(type_: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """The type under a `Meta` that carries only a description (or other schema extras)."""
    return type_.type if isinstance(type_, msgspec.inspect.Metadata) else type_


def _restore_zero_bounds(struct: type, schema: Schema) -> None:
    for field in msgspec.inspect.type_info(struct).fields:
        property_schema = (schema.properties or {}).get(field.encode_name)
        if not isinstance(property_schema, Schema):
            continue
        field_type = _unwrapped(field.type)
        members = field_type.types if isinstance(field_type, msgspec.inspect.UnionType) else (field_type,)
        for member in map(_unwrapped, members):
            if isinstance(member, msgspec.inspect.IntType | msgspec.inspect.FloatType):
                for bound, keyword in _BOUNDS.items():
                    if getattr(member, bound) == 0 and getattr(property_schema, keyword) is None:
                        setattr(property_schema, keyword, 0)


def rebind_options_handlers(app: Litestar) -> None:
    """Litestar 2 binds a path's automatic OPTIONS handler to the route as first registered, so
    `Allow` named only the methods of the first handler (litestar#4169, fixed in v3)."""
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if handler.handler_name == "options_handler" and handler.fn.__closure__:
                    handler.fn.__closure__[0].cell_contents = route


@dataclass
class PublicOperation(Operation):
    """An operation anyone may call: probes answer without an API key."""

    def __post_init__(self) -> None:
        self.security = []


@dataclass
class DeviceExportOperation(Operation):
    """The export streams CSV or GeoJSON, as `format` asks."""

    def __post_init__(self) -> None:
        exported = self.responses["200"]
        exported.content = {"text/csv": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
                            "application/geo+json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT))}


@dataclass
class EventStreamOperation(Operation):
    """The event stream answers Server-Sent Events, never ends by itself."""

    def __post_init__(self) -> None:
        self.responses["200"].content = {"text/event-stream": OpenAPIMediaType(schema=Schema(
            type=OpenAPIType.STRING,
            description="SSE messages: `retry:`, then per event `id:`, `event:` and `data:` (JSON)"))}


@dataclass
class DeviceImportOperation(Operation):
    """The import reads its body itself, so the document says here what the body may be."""

    def __post_init__(self) -> None:
        csv = Schema(type=OpenAPIType.STRING, description=(
            "UTF-8 CSV with a header row: kind, endpoint, lat, lon and any device field"))
        feature_collection = Schema(
            type=OpenAPIType.OBJECT, required=["type", "features"],
            description="GeoJSON FeatureCollection of Point features; properties hold the device fields",
            properties={"type": Schema(const="FeatureCollection"),
                        "features": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT))})
        self.request_body = RequestBody(required=True, content={
            "text/csv": OpenAPIMediaType(schema=csv),
            "application/geo+json": OpenAPIMediaType(schema=feature_collection),
        })


@dataclass
class ImageUploadOperation(Operation):
    """An attachment is the raw image as the body; its first bytes, not the header, say its type."""

    def __post_init__(self) -> None:
        image = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        self.request_body = RequestBody(required=True, content={
            media_type: OpenAPIMediaType(schema=image) for media_type in ("image/jpeg", "image/png", "image/webp")})


@dataclass
class ImageDownloadOperation(Operation):
    """A photo comes back as it was stored, with its own image type."""

    def __post_init__(self) -> None:
        image = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        found = (self.responses or {}).get("200")
        if isinstance(found, OpenAPIResponse):
            found.content = {media_type: OpenAPIMediaType(schema=image)
                             for media_type in ("image/jpeg", "image/png", "image/webp")}


@dataclass
class FirmwareDownloadOperation(Operation):
    """A firmware image comes back as its bytes, with its SHA-256 as ETag and its file name."""

    def __post_init__(self) -> None:
        found = (self.responses or {}).get("200")
        if isinstance(found, OpenAPIResponse):
            found.content = {"application/octet-stream": OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY))}


def docs_ui() -> tuple[SwaggerRenderPlugin, Router]:
    """Swagger UI whose scripts, styles and icon come from the installed package, not a CDN."""
    assets = Path(str(swagger_ui_bundle.swagger_ui_path))
    plugin = SwaggerRenderPlugin(
        path="/swagger",
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )
    router = create_static_files_router(ASSETS_PATH, directories=[assets], include_in_schema=False,
                                        cache_control=None)
    return plugin, router


@dataclass
class PlanOperation(Operation):
    """A plan is JSON, or GeoJSON or CSV as `format` asks."""

    def __post_init__(self) -> None:
        answer = self.responses["200"]
        answer.content = {**(answer.content or {}),
                          "application/geo+json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT)),
                          "text/csv": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))}
