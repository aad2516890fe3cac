"""ASGI middleware: request ids, the one log line per request, and bearer-key authentication."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import structlog
from litestar import Request
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem
from fleet.access.service import ApiKeyService
from fleet.errors import Unauthenticated

log = structlog.get_logger("fleet.http")

PUBLIC_PREFIXES = ("/healthz", "/readyz", "/schema")
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


def authentication(service: ApiKeyService) -> Callable[[ASGIApp], ASGIApp]:
    """Resolves `Authorization: Bearer <key>` to a principal before any handler runs."""
    return lambda app: _authenticate(app, service)


def _authenticate(app: ASGIApp, service: ApiKeyService) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(PUBLIC_PREFIXES):
            await app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, secret = header.partition(" ")
        state = scope.setdefault("state", {})
        try:
            if scheme.lower() != "bearer" or not secret.strip():
                raise Unauthenticated("send an API key as 'Authorization: Bearer <key>'")
            state["principal"] = await service.authenticate(secret.strip(), state.get("request_id"))
        except Unauthenticated as exc:
            request = Request(scope)
            response = problem(request, 401, "Unauthenticated", exc.detail)
            await response.to_asgi_response(request.app, request)(scope, receive, send)
            return
        await app(scope, receive, send)

    return middleware
