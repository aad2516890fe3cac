"""ASGI middleware: every POST honours `Idempotency-Key` (fleet.idempotency says how)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from litestar import Request
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem
from fleet.idempotency.models import Outcome, StoredResponse
from fleet.idempotency.service import IdempotencyService

_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# Set per request by the layers outside this one; a replay gets fresh ones.
_NOT_KEPT = {b"x-request-id", b"date", b"server", b"content-length"}


def idempotency(service: IdempotencyService, max_body_bytes: int) -> Callable[[ASGIApp], ASGIApp]:
    return lambda app: _idempotent(app, service, max_body_bytes)


def _idempotent(app: ASGIApp, service: IdempotencyService, max_body_bytes: int) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        key = dict(scope.get("headers", [])).get(b"idempotency-key") if scope["type"] == "http" else None
        principal = scope.get("state", {}).get("principal")
        if key is None or scope["method"] != "POST" or principal is None or principal.api_key_id is None:
            await app(scope, receive, send)
            return
        key_text = key.decode("latin-1")
        if not _KEY.fullmatch(key_text):
            await _problem(scope, receive, send, 400, "Bad Request", "Idempotency-Key: 1-255 visible ASCII characters")
            return
        body = await _read_body(receive, max_body_bytes)
        if body is None:
            await _problem(scope, receive, send, 413, "Payload Too Large", "the request body is too large")
            return
        path = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
        body_hash = hashlib.sha256(body).digest()
        ids = (principal.tenant_id, principal.api_key_id, key_text)
        claim = await service.claim(*ids, "POST", path, body_hash)
        if claim.outcome is Outcome.MISMATCH:
            await _problem(scope, receive, send, 422, "Unprocessable Content",
                           "this Idempotency-Key was used for a different request")
            return
        if claim.outcome is Outcome.IN_PROGRESS:
            await _problem(scope, receive, send, 409, "Conflict",
                           "a request with this Idempotency-Key is in progress; retry shortly",
                           headers={"Retry-After": "1"})
            return
        if claim.outcome is Outcome.REPLAY:
            assert claim.response is not None
            await _replay(send, claim.response)
            return
        await _run_and_keep(app, scope, _replaying(body, receive), send, service, ids)

    return middleware


async def _run_and_keep(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                        service: IdempotencyService, ids: tuple) -> None:
    status, headers, chunks = 500, [], []

    async def keeping(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
                       if k.lower() not in _NOT_KEPT]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
        await send(message)

    try:
        await app(scope, receive, keeping)
    except BaseException:
        await service.release(*ids)
        raise
    if status >= 500:
        # Not known to have happened: let a retry run the request again.
        await service.release(*ids)
    else:
        await service.complete(*ids, StoredResponse(status, headers, b"".join(chunks)))


def _replaying(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _replay(send: Send, response: StoredResponse) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers += [(b"idempotent-replayed", b"true"), (b"content-length", str(len(response.body)).encode())]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


async def _problem(scope: Scope, receive: Receive, send: Send, status: int, title: str, detail: str,
                   headers: dict[str, str] | None = None) -> None:
    request = Request(scope)
    response = problem(request, status, title, detail, headers=headers)
    await response.to_asgi_response(request.app, request)(scope, receive, send)
