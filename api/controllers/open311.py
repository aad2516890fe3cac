"""/open311/v2: citizens' reports over Open311 GeoReport v2, per city (`jurisdiction_id` = the city's slug).

Its own key (`api_key`, in POST's form) and its own error format (a list of `code`/`description`)
stand in for the bearer key and problem+json of /api/v1, as the specification defines them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import Parameter

from api.open311 import (Open311Created, Open311Error, Open311Failure, Open311Operation, Open311Request,
                         Open311Service, Open311ServiceDefinition, created_out, definition_out, failure,
                         render, request_out, service_out, split_format)
from fleet import errors
from fleet.access.limits import RequestLimits
from fleet.access.models import Principal
from fleet.access.service import ApiKeyService
from fleet.db.availability import database_away
from fleet.reports.models import MAX_REQUESTS, ReportForm, RequestQuery, RequestStatus
from fleet.reports.service import ReportService, reporter_actor

log = structlog.get_logger(__name__)

PREFIX = "/open311/v2"
SLUG = "^[a-z0-9][a-z0-9-]{1,62}$"
Jurisdiction = Annotated[str, Parameter(description="the city's slug, e.g. `seoul`", pattern=SLUG)]
ReaderKey = Annotated[str | None, Parameter(required=False, max_length=200,
                                            description="only where the city keeps its requests private")]
# Bounded so that a whole query stays a URL every proxy and server passes (~180 ids).
CommaList = Annotated[str | None, Parameter(required=False, max_length=2000, description="comma-separated")]


class Open311Gate:
    """The REST API's rate limits (per client address, per key, failed keys per address) and key
    check, answered as Open311 errors: 429 when spent, 403 for a missing or wrong `api_key`."""

    def __init__(self, apikeys: ApiKeyService, limits: RequestLimits) -> None:
        self.apikeys = apikeys
        self.limits = limits

    def address(self, request: Request) -> None:
        wait = self.limits.for_address(_client(request), time.monotonic())
        if wait:
            raise _too_many(wait, "too many requests from this address")

    async def key(self, request: Request, secret: str | None, *, required: bool) -> Principal | None:
        if not secret:
            if required:
                raise Open311Failure(403, "api_key was not provided")
            return None
        address = _client(request)
        request_id = request.scope.get("state", {}).get("request_id")
        wait = self.limits.failing(address, time.monotonic())
        principal = self.apikeys.cached(secret, request_id) if wait else None
        if wait and principal is None:
            raise _too_many(wait, "too many failed api_keys from this address")
        if principal is None:
            try:
                principal = await self.apikeys.authenticate(secret, request_id)
            except errors.Unauthenticated:
                self.limits.authentication_failed(address, time.monotonic())
                raise Open311Failure(403, "api_key is invalid or revoked") from None
        request.scope["state"]["principal"] = principal  # the request's log line names the city
        wait = self.limits.for_key(principal.api_key_id, time.monotonic())
        if wait:
            raise _too_many(wait, "too many requests with this api_key")
        return principal


def _client(request: Request) -> str:
    return (request.scope.get("client") or ("unknown", 0))[0]


def _too_many(wait_s: float, description: str) -> Open311Failure:
    return Open311Failure(429, description, {"Retry-After": str(max(1, int(wait_s + 0.999)))})


def _format(request: Request) -> str:
    return "xml" if request.url.path.endswith(".xml") else "json"


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _errors(status: int, *descriptions: str) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(list[Open311Error], description="; ".join(descriptions),
                                 generate_examples=False)}


def _responses(ok: type, *, status: int = 200, found: bool = False, key: bool = False) -> dict[int, ResponseSpec]:
    responses = {status: ResponseSpec(ok, description="GeoReport v2 document (JSON, or XML for .xml)",
                                      generate_examples=False),
                 **_errors(400, "jurisdiction_id or another argument missing or invalid"),
                 **_errors(404, "jurisdiction_id or the resource was not found"),
                 **_errors(429, "rate limit spent; see Retry-After"),
                 **_errors(503, "the database is unavailable; retry later")}
    if key or found:
        responses |= _errors(403, "api_key missing, invalid, or not this jurisdiction's")
    return responses


def _form_schema() -> RequestBody:
    text = Schema(type=OpenAPIType.STRING)
    number = Schema(type=OpenAPIType.NUMBER)
    properties: dict[str, Any] = {name: text for name in (
        "api_key", "service_code", "address_string", "address_id", "email", "device_id",
        "account_id", "first_name", "last_name", "phone", "description", "media_url")}
    properties |= {"lat": number, "long": number, "jurisdiction_id": Schema(type=OpenAPIType.STRING, pattern=SLUG)}
    schema = Schema(type=OpenAPIType.OBJECT, required=["api_key", "jurisdiction_id", "service_code"],
                    properties=properties, description=(
                        "GeoReport v2 POST Service Request; lat & long, address_string or address_id; "
                        "attribute[code]=value per the service definition"))
    return RequestBody(required=True, content={
        "application/x-www-form-urlencoded": OpenAPIMediaType(schema=schema)})


@dataclass
class _FormOperation(Open311Operation):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = _form_schema()


class Open311Controller(Controller):
    path = PREFIX
    tags = ["open311"]

    @get(["/services.json", "/services.xml"], summary="The kinds of report the city takes (public)",
         operation_class=Open311Operation, responses=_responses(list[Open311Service]))
    async def list_services(self, request: Request, jurisdiction_id: Jurisdiction, open311_gate: Open311Gate,
                            report_service: ReportService) -> Response:
        open311_gate.address(request)
        await report_service.jurisdiction(jurisdiction_id)
        return render(_format(request), "services", [service_out(s) for s in report_service.services()])

    @get("/services/{service_code:str}", summary="A service's definition: its questions (`streetlight_out.json`)",
         operation_class=Open311Operation, responses=_responses(Open311ServiceDefinition))
    async def definition(self, request: Request, service_code: str, jurisdiction_id: Jurisdiction,
                         open311_gate: Open311Gate, report_service: ReportService) -> Response:
        code, format_ = split_format(service_code)
        open311_gate.address(request)
        await report_service.jurisdiction(jurisdiction_id)
        return render(format_, "service_definition", definition_out(report_service.service(code)))

    @post(["/requests.json", "/requests.xml"], summary="File a citizen's report (form-encoded, with api_key)",
          operation_class=_FormOperation,
          responses=_responses(list[Open311Created], status=201, key=True) | _errors(413, "the form is too large"),
          status_code=201)
    async def file(self, request: Request, open311_gate: Open311Gate, report_service: ReportService) -> Response:
        open311_gate.address(request)
        fields, attributes = _form(await request.body(), request.query_params)
        secret = fields.pop("api_key", None)
        principal = await open311_gate.key(request, secret, required=True)
        tenant = await report_service.jurisdiction(fields.pop("jurisdiction_id", None))
        try:
            form = msgspec.convert({**fields, "attributes": attributes}, ReportForm, strict=False)
        except msgspec.ValidationError as exc:
            raise Open311Failure(400, str(exc).replace("`$.", "`")) from None
        filed = await report_service.file(principal, tenant, form, actor=reporter_actor(secret or ""))
        return render(_format(request), "service_requests", [created_out(filed)], status=201)

    @get(["/requests.json", "/requests.xml"], summary="Requests of the last 90 days, or those asked for",
         operation_class=Open311Operation, responses=_responses(list[Open311Request], found=True))
    async def list_requests(
        self, request: Request, jurisdiction_id: Jurisdiction, open311_gate: Open311Gate,
        report_service: ReportService, service_request_id: CommaList = None, service_code: CommaList = None,
        start_date: Annotated[str | None, Parameter(required=False, max_length=40,
                                                    description="W3C date-time with its offset")] = None,
        end_date: Annotated[str | None, Parameter(required=False, max_length=40,
                                                  description="W3C date-time with its offset")] = None,
        status: Annotated[str | None, Parameter(required=False, max_length=20,
                                                description="open, closed, or both comma-separated")] = None,
        api_key: ReaderKey = None,
    ) -> Response:
        open311_gate.address(request)
        reader = await open311_gate.key(request, api_key, required=False)
        tenant = await report_service.jurisdiction(jurisdiction_id)
        query = RequestQuery(service_request_ids=_csv(service_request_id)[:MAX_REQUESTS],
                             service_codes=_csv(service_code), statuses=_statuses(status),
                             start=_w3c("start_date", start_date), end=_w3c("end_date", end_date))
        found = await report_service.requests(tenant, query, reader)
        timezone = ZoneInfo(tenant.timezone)
        return render(_format(request), "service_requests", [request_out(r, timezone) for r in found])

    @get("/requests/{service_request_id:str}", summary="One request and how far the work has got (`id.json`)",
         operation_class=Open311Operation, responses=_responses(list[Open311Request], found=True))
    async def one_request(
        self, request: Request, service_request_id: str, jurisdiction_id: Jurisdiction, open311_gate: Open311Gate,
        report_service: ReportService,
        api_key: ReaderKey = None,
    ) -> Response:
        request_id, format_ = split_format(service_request_id)
        open311_gate.address(request)
        reader = await open311_gate.key(request, api_key, required=False)
        tenant = await report_service.jurisdiction(jurisdiction_id)
        found = await report_service.request(tenant, request_id, reader)
        return render(format_, "service_requests", [request_out(found, ZoneInfo(tenant.timezone))])


def _form(body: bytes, query: Any) -> tuple[dict[str, str], dict[str, list[str]]]:
    """`application/x-www-form-urlencoded` as GeoReport v2 sends it; `attribute[code]=v` and
    `attribute[code][]=v` become lists per code. An empty value counts as not sent (the spec)."""
    try:
        pairs = [*query.multi_items(), *parse_qsl(body.decode("utf-8"), keep_blank_values=False,
                                                  max_num_fields=200, strict_parsing=False)]
    except (UnicodeDecodeError, ValueError) as exc:
        raise Open311Failure(400, f"the form could not be read: {exc}") from None
    fields: dict[str, str] = {}
    attributes: dict[str, list[str]] = {}
    for name, value in pairs:
        if name.startswith("attribute[") and "]" in name:
            attributes.setdefault(name[len("attribute["):name.index("]")], []).append(value)
        elif value:
            fields[name] = value
    return fields, attributes


def _statuses(value: str | None) -> tuple[RequestStatus, ...]:
    try:
        return tuple(RequestStatus(s) for s in _csv(value))
    except ValueError:
        raise Open311Failure(400, "status takes open, closed, or both comma-separated") from None


def _w3c(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        # An unescaped `+` of an offset arrives as a space in a query string.
        parsed = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Open311Failure(400, f"{name} must be a W3C date-time with its offset, e.g. 2010-01-01T00:00:00Z")
    return parsed


_FLEET_STATUS = {errors.Unauthenticated: 403, errors.PermissionDenied: 403, errors.NotFound: 404,
                 errors.PayloadTooLarge: 413}


def open311_error(request: Request, exc: Exception) -> Response:
    """The one mapper for Open311 routes: every error as GeoReport v2's `errors` list."""
    format_ = _format(request)
    if isinstance(exc, Open311Failure):
        return failure(format_, exc.status, exc.description, exc.headers)
    if isinstance(exc, errors.Unavailable | errors.ServiceBusy):
        return failure(format_, 503, exc.detail, {"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, errors.ValidationFailed | errors.Conflict):
        details = [Open311Error(400, f"{e.field}: {e.message}") for e in exc.errors] or [Open311Error(400, exc.detail)]
        return render(format_, "errors", details, 400)
    if isinstance(exc, errors.FleetError):
        status = next((s for t, s in _FLEET_STATUS.items() if isinstance(exc, t)), 400)
        return failure(format_, status, exc.detail)
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else []
        details = [f"{item.get('key', '')}: {item.get('message', 'invalid')}"
                   for item in extra if isinstance(item, dict)]
        return failure(format_, 400, "; ".join(details) or str(exc.detail))
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return failure(format_, exc.status_code, str(exc.detail), exc.headers)
    if isinstance(exc, asyncpg.DataError):
        return failure(format_, 400, "the request holds a value the database cannot store")
    if database_away(exc):
        return failure(format_, 503, "the database is unavailable; retry later", {"Retry-After": "10"})
    log.exception("unhandled error", error=repr(exc))
    return failure(format_, 500, "unexpected error")


# Every type the app maps to problem+json, mapped here too: Litestar picks the handler of the most
# specific type across layers, so the app's FleetError handler would otherwise win over Exception.
Open311Controller.exception_handlers = {error: open311_error for error in (
    Open311Failure, errors.FleetError, ValidationException, HTTPException, asyncpg.DataError, Exception)}
