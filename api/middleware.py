"""ASGI middleware: request ids, the one log line per request, rate limits and bearer-key authentication."""

from __future__ import annotations

import asyncio
import hmac
import math
import re
import time
import uuid
from collections.abc import Callable

import structlog
from litestar import Request
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import count_request
from api.problems import problem
from fleet.access.limits import RequestLimits
from fleet.access.service import ApiKeyService, SessionService, csrf_token
from fleet.errors import Unauthenticated
from fleet.logging import redact_query

log = structlog.get_logger("fleet.http")

PUBLIC_PREFIXES = ("/healthz", "/readyz", "/schema", "/ui/", "/vendor/")
# The pages' shell (it shows the sign-in form to a stranger), signing in and out.
PUBLIC_PATHS = {("GET", "/"), ("HEAD", "/"), ("POST", "/session"), ("POST", "/session/logout")}
SESSION_COOKIE = "fleet_session"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Open311 carries its own key (`api_key`) and answers in its own error format: its controller's
# gate applies the same limits (api.controllers.open311.Open311Gate).
OWN_KEY_PREFIXES = ("/open311/",)
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")


def request_context(app: ASGIApp) -> ASGIApp:
    """Binds a request id, then logs method, path, status, tenant and duration once at the end
    (and counts the request for /metrics, api.metrics)."""

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
            if message.get("more_body"):
                # A streamed body (an export, a firmware image) whose chunks are at hand never
                # gives the event loop a turn: when the client goes away (`curl … | head`),
                # asyncio's transport learns of it at the next write but tells uvicorn only in a
                # callback that cannot run, so every further chunk is written into the closed
                # socket and asyncio logs "socket.send() raised exception." for each (hundreds).
                # One turn per chunk lets uvicorn mark the request disconnected (it then drops
                # the writes) and Litestar's disconnect listener end the stream.
                await asyncio.sleep(0)

        try:
            await app(scope, receive, send_with_id)
        finally:
            count_request(scope, status, time.perf_counter() - started)
            principal = scope["state"].get("principal")
            query = redact_query(scope.get("query_string", b"").decode("latin-1"))
            log.info("request", method=scope["method"], path=scope["path"], **({"query": query} if query else {}),
                     status=status, tenant=principal.tenant_slug if principal else None,
                     duration_ms=round((time.perf_counter() - started) * 1000, 2))
            structlog.contextvars.unbind_contextvars("request_id")

    return middleware


def authentication(service: ApiKeyService, limits: RequestLimits,
                   sessions: SessionService | None = None) -> Callable[[ASGIApp], ASGIApp]:
    """Resolves `Authorization: Bearer <key>` (or, without one, a signed-in browser's session
    cookie) to a principal before any handler runs, within the per-address and per-key rate
    limits."""
    return lambda app: _authenticate(app, service, limits, sessions)


def _cookie(scope: Scope, name: str) -> str:
    header = dict(scope["headers"]).get(b"cookie", b"").decode("latin-1")
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip()
    return ""


def session_cookie(secret: str, max_age: int, secure: bool) -> str:
    """The Set-Cookie value of a browser session (an empty secret and 0 clear it)."""
    return (f"{SESSION_COOKIE}={secret}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
            + ("; Secure" if secure else ""))


def _renewing(send: Send, cookie: str) -> Send:
    """Sends the session's cookie again with each answer made with it: the browser's copy lasts
    as long as the server's idle time, which each use restarts (a wall screen that never
    reloads would otherwise lose its cookie `idle` after signing in, in use or not)."""
    async def renewed(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode("latin-1"))]
        await send(message)
    return renewed


def _public(scope: Scope) -> bool:
    path = scope["path"]
    return path.startswith(PUBLIC_PREFIXES + OWN_KEY_PREFIXES) or (scope["method"], path) in PUBLIC_PATHS


def foreign_origin(origin: str | None, scheme: str, host: str) -> bool:
    """A browser names the page a write comes from (Origin): another site's is refused. No
    Origin (curl, scripts): nothing to check here (a session's write still needs its token)."""
    return bool(origin) and origin != f"{scheme}://{host}"


def _forged(scope: Scope, session_secret: str) -> str | None:
    """Why a write made with a session cookie is refused, if it is: it must come from Fleet's
    own pages (their Origin, and the token only they were given)."""
    if scope["method"] in _SAFE_METHODS:
        return None
    headers = dict(scope["headers"])
    if foreign_origin(headers.get(b"origin", b"").decode("latin-1"), scope.get("scheme", "http"),
                      headers.get(b"host", b"").decode("latin-1")):
        return "a write from another site's page is refused"
    if not hmac.compare_digest(headers.get(b"x-csrf-token", b""), csrf_token(session_secret).encode()):
        return "a write with the session cookie needs the page's X-CSRF-Token"
    return None


def _authenticate(app: ASGIApp, service: ApiKeyService, limits: RequestLimits,
                  sessions: SessionService | None) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _public(scope):
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
        session_secret = "" if secret or sessions is None else _cookie(scope, SESSION_COOKIE)
        if principal is None:
            try:
                if session_secret:
                    principal = await sessions.authenticate(session_secret, state.get("request_id"))
                elif not secret:
                    raise Unauthenticated("send an API key as 'Authorization: Bearer <key>'")
                else:
                    principal = await service.authenticate(secret, state.get("request_id"))
            except Unauthenticated as exc:
                if secret or session_secret:  # a request without a key cost no lookup
                    limits.authentication_failed(address, time.monotonic())
                request = Request(scope)
                response = problem(request, 401, "Unauthenticated", exc.detail)
                await response.to_asgi_response(request.app, request)(scope, receive, send)
                return
        forged = _forged(scope, session_secret) if session_secret else None
        if forged:
            request = Request(scope)
            response = problem(request, 403, "Forbidden", forged)
            await response.to_asgi_response(request.app, request)(scope, receive, send)
            return
        state["principal"] = principal
        wait = limits.for_key(principal.api_key_id, time.monotonic())
        if wait:
            await _too_many(scope, receive, send, wait, "too many requests with this key")
            return
        if session_secret:
            send = _renewing(send, session_cookie(session_secret, int(sessions.idle_s),
                                                  scope.get("scheme") == "https"))
        await app(scope, receive, send)

    return middleware


async def _too_many(scope: Scope, receive: Receive, send: Send, wait_s: float, detail: str) -> None:
    request = Request(scope)
    response = problem(request, 429, "Too Many Requests", detail,
                       headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
    await response.to_asgi_response(request.app, request)(scope, receive, send)
