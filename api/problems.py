"""The one mapper from errors to RFC 9457 problem+json responses."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import asyncpg
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import Empty
from litestar.types.internal_types import PathParameterDefinition
from litestar.utils.scope.state import ScopeState
from msgspec import Meta, Struct

from api.body_errors import body_errors
from fleet import errors
from fleet.db.availability import database_away
from fleet.errors import Unavailable

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


class FieldProblem(Struct):
    field: Annotated[str, Meta(description="the input at fault, e.g. `location.lat` or a CSV column")]
    message: str
    row: Annotated[int, Meta(description="import only: the 1-based row or feature at fault")] | None = None


class Problem(Struct):
    """An RFC 9457 problem; `errors` names each field at fault."""

    type: str
    title: str
    status: Annotated[int, Meta(ge=400, le=599)]
    detail: str
    instance: str
    errors: list[FieldProblem] | None = None
    request_id: str | None = None
    current_version: Annotated[int, Meta(description="412 only: the entity's current version")] | None = None
    replaced_by: Annotated[str, Meta(description=(
        "409 on a route a re-plan replaced: the id of the route to use instead"))] | None = None


_TITLES = {400: "Bad Request", 401: "Unauthenticated", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict", 413: "Payload Too Large",
           412: "Precondition Failed", 415: "Unsupported Media Type", 422: "Unprocessable Content",
           428: "Precondition Required", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses for the problem statuses a handler can answer with."""
    return {status: ResponseSpec(Problem, description=_TITLES[status], media_type=PROBLEM_JSON,
                                 generate_examples=False) for status in statuses}

_STATUS: list[tuple[type[errors.FleetError], int, str]] = [
    (errors.Unauthenticated, 401, "Unauthenticated"),
    (errors.PermissionDenied, 403, "Forbidden"),
    (errors.NotFound, 404, "Not Found"),
    (errors.Conflict, 409, "Conflict"),
    (errors.PayloadTooLarge, 413, "Payload Too Large"),
    (errors.UnsupportedMediaType, 415, "Unsupported Media Type"),
    (errors.PreconditionRequired, 428, "Precondition Required"),
    (errors.ValidationFailed, 422, "Unprocessable Content"),
    # The server's configuration, not the request nor a passing outage: no Retry-After.
    (errors.NotConfigured, 500, "Internal Server Error"),
]


def problem(request: Request, status: int, title: str, detail: str,
            field_errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail, "instance": request.url.path, **(extra or {})}
    if field_errors:
        body["errors"] = field_errors
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        body["request_id"] = request_id
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="fleet"'
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


def _field_errors(exc: errors.FleetError) -> list[dict[str, Any]]:
    return [{"field": e.field, "message": e.message, **({"row": e.row} if e.row is not None else {})}
            for e in exc.errors]


def fleet_error(request: Request, exc: errors.FleetError) -> Response:
    if isinstance(exc, errors.Unavailable | errors.ServiceBusy):
        return problem(request, 503, "Service Unavailable", exc.detail,
                       headers={"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, errors.PreconditionFailed):
        # The client learns the version to merge onto without a second request.
        return problem(request, 412, "Precondition Failed", exc.detail,
                       headers={"ETag": f'"{exc.current_version}"'},
                       extra={"current_version": exc.current_version})
    if isinstance(exc, errors.Replaced):
        # The tablet moves to the successor without a second request.
        return problem(request, 409, "Conflict", exc.detail, extra={
            "replaced_by": str(exc.replaced_by) if exc.replaced_by is not None else None})
    for error_type, status, title in _STATUS:
        if isinstance(exc, error_type):
            return problem(request, status, title, exc.detail, _field_errors(exc))
    log.error("unmapped domain error", error=repr(exc))
    return problem(request, 500, "Internal Server Error", "unexpected error")


def validation_error(request: Request, exc: ValidationException) -> Response:
    """Malformed bodies and parameters: name each field in the client's terms, every field at
    fault (msgspec stops at the first), the first of them in `detail`."""
    items = [item for item in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(item, dict)]
    field_errors, detail = [], None
    body = _body_errors(request) if any(item.get("source") == "body" for item in items) else []
    if body:
        field_errors = [{"field": field, "message": message} for field, message in body]
        detail = f"{body[0][0]}: {body[0][1]}"
    for item in items:
        # Litestar names a parameter's source with a str enum (ParamType.QUERY), a body's with "body".
        source, key = getattr(item.get("source"), "value", item.get("source")), item.get("key")
        if source == "body" and body:
            continue
        message = str(item.get("message", "invalid"))
        if source in ("query", "path", "header", "cookie") and key:
            message = _parameter_message(request, source, key, message)
            detail = detail or f"{source} parameter '{key}' {message}"
        field = _json_path_to_field(key or "body", message)
        field_errors.append({"field": "body" if field == "data" else field, "message": message})
    if detail is None:
        detail = exc.detail if exc.detail and exc.detail != "Bad Request" else "malformed request"
    return problem(request, 400, "Bad Request", detail, field_errors or None)


def _body_errors(request: Request) -> list[tuple[str, str]]:
    """Every error of the JSON body against the handler's `data` type; none when the body is
    not JSON already decoded (a form, a file)."""
    handler = request.scope.get("route_handler")
    decoded = ScopeState.from_scope(request.scope).json
    data = handler.parsed_data_field if handler is not None else None
    if data is None or decoded is Empty:
        return []
    try:
        return body_errors(decoded, data.annotation, handler.default_deserializer)
    except Exception:  # noqa: BLE001 - a bug here must not turn the client's 400 into a 500
        log.exception("listing a body's errors failed", route=request.url.path)
        return []


def _parameter_message(request: Request, source: str, key: str, message: str) -> str:
    values = {"query": request.query_params, "header": request.headers, "cookie": request.cookies,
              "path": request.path_params}[source]
    value = values.get(key)
    if message == "Invalid UUID" and value is not None:
        return f"must be a UUID, got {_shown(str(value))}"
    return message


def _shown(value: str) -> str:
    return repr(value if len(value) <= 64 else value[:64] + "…")


def _json_path_to_field(key: str, message: str) -> str:
    # msgspec reports body errors as "... - at `$.location.lat`"; surface the path.
    if "at `$." in message:
        return message.rsplit("at `$.", 1)[1].rstrip("`")
    return key


def http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if status == 404 and isinstance(exc.__cause__, ValueError) and (malformed := _malformed_path_parameter(request)):
        # The router matched a route's shape but could not parse one of its parameters.
        name, message = malformed
        return problem(request, 400, "Bad Request", f"path parameter '{name}' {message}",
                       [{"field": name, "message": message}])
    title = _TITLES.get(status, "Error")
    if status >= 500:
        log.error("server error", status=status, detail=exc.detail)
        return problem(request, status, "Internal Server Error", "unexpected error")
    # Keep what the exception says about the response, e.g. `Allow` on a 405.
    return problem(request, status, title, str(exc.detail), headers=exc.headers)


def _malformed_path_parameter(request: Request) -> tuple[str, str] | None:
    """The first path parameter of a route of this path's shape that its type refuses."""
    components = [c for c in request.scope["path"].split("/") if c]
    for route in request.app.routes:
        shape = route.path_components
        if len(shape) != len(components) or not any(isinstance(part, PathParameterDefinition) for part in shape):
            continue
        if any(isinstance(part, str) and part != component for part, component in zip(shape, components)):
            continue
        for part, component in zip(shape, components):
            if isinstance(part, PathParameterDefinition) and part.parser is not None:
                try:
                    part.parser(component)
                except ValueError:
                    kind = _TYPE_NAMES.get(part.type, f"of type {part.type.__name__}")
                    return part.name, f"must be {kind}, got {_shown(component)}"
    return None


_TYPE_NAMES = {UUID: "a UUID", int: "an integer", float: "a number"}


def database_input_error(request: Request, exc: asyncpg.DataError) -> Response:
    """Input PostgreSQL cannot represent (a NUL byte, an out-of-range number) that slipped past
    validation: still the client's malformed input, never a 500."""
    log.warning("database refused input", error=type(exc).__name__, detail=str(exc)[:200])
    return problem(request, 400, "Bad Request", "the request holds a value the database cannot store")


def unexpected_error(request: Request, exc: Exception) -> Response:
    if database_away(exc):
        # Not a bug and not one line per request: /readyz and the listener's log say it.
        log.debug("database unavailable", error=repr(exc))
        return problem(request, 503, "Service Unavailable", "the database is unavailable; retry later",
                       headers={"Retry-After": str(Unavailable.retry_after_s)})
    log.exception("unhandled error", error=repr(exc))
    return problem(request, 500, "Internal Server Error", "unexpected error")


EXCEPTION_HANDLERS = {
    errors.FleetError: fleet_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    asyncpg.DataError: database_input_error,
    Exception: unexpected_error,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "MediaType", "Problem", "problem", "problems"]
