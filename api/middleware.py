"""ASGI middleware: request ids, the one log line per request, rate limits and bearer-key authentication."""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable

import structlog
from litestar import Request
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem
from fleet.access.limits import RequestLimits
from fleet.access.service import ApiKeyService
from fleet.errors import Unauthenticated

log = structlog.get_logger("fleet.http")

PUBLIC_PREFIXES = ("/healthz", "/readyz", "/schema")
# Open311 carries its own key (`api_key`) and answers in its own error format: its controller's
# gate applies the same limits (api.controllers.open311.Open311Gate).
OWN_KEY_PREFIXES = ("/open311/",)
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")


def request_context(app: ASGIApp) -> ASGIApp:
    """Binds a request id, then logs method, path, status, tenant and duration once at the end."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        # A caller's id is echoed into headers and logs, so only a short, plain one is kept.
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            principal = scope["state"].get("principal")
            log.info("request", method=scope["method"], path=scope["path"], status=status,
                     tenant=principal.tenant_slug if principal else None,
                     duration_ms=round((time.perf_counter() - started) * 1000, 2))
            structlog.contextvars.unbind_contextvars("request_id")

    return middleware


def authentication(service: ApiKeyService, limits: RequestLimits) -> Callable[[ASGIApp], ASGIApp]:
    """Resolves `Authorization: Bearer <key>` to a principal before any handler runs, within
    the per-address and per-key rate limits."""
    return lambda app: _authenticate(app, service, limits)


def _authenticate(app: ASGIApp, service: ApiKeyService, limits: RequestLimits) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(PUBLIC_PREFIXES + OWN_KEY_PREFIXES):
            await app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        now = time.monotonic()
        wait = limits.for_address(address, now)
        if wait:
            await _too_many(scope, receive, send, wait, "too many requests from this address")
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, secret = header.partition(" ")
        secret = secret.strip() if scheme.lower() == "bearer" else ""
        state = scope.setdefault("state", {})
        # An address that spent its failed attempts gets only keys this node knows already:
        # guessing must not cost a database round trip per guess.
        wait = limits.failing(address, now)
        principal = service.cached(secret, state.get("request_id")) if wait and secret else None
        if wait and principal is None:
            await _too_many(scope, receive, send, wait, "too many failed authentications from this address")
            return
        if principal is None:
            try:
                if not secret:
                    raise Unauthenticated("send an API key as 'Authorization: Bearer <key>'")
                principal = await service.authenticate(secret, state.get("request_id"))
            except Unauthenticated as exc:
                if secret:  # a request without a key cost no lookup
                    limits.authentication_failed(address, time.monotonic())
                request = Request(scope)
                response = problem(request, 401, "Unauthenticated", exc.detail)
                await response.to_asgi_response(request.app, request)(scope, receive, send)
                return
        state["principal"] = principal
        wait = limits.for_key(principal.api_key_id, time.monotonic())
        if wait:
            await _too_many(scope, receive, send, wait, "too many requests with this key")
            return
        await app(scope, receive, send)

    return middleware


async def _too_many(scope: Scope, receive: Receive, send: Send, wait_s: float, detail: str) -> None:
    request = Request(scope)
    response = problem(request, 429, "Too Many Requests", detail,
                       headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
    await response.to_asgi_response(request.app, request)(scope, receive, send)
