"""ASGI middleware: every POST honours `Idempotency-Key` (fleet.idempotency says how)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
from collections.abc import Callable
from typing import IO

from litestar import Request
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem
from fleet.idempotency.models import Outcome, StoredResponse
from fleet.idempotency.service import IdempotencyService

_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# Set per request by the layers outside this one; a replay gets fresh ones.
_NOT_KEPT = {b"x-request-id", b"date", b"server", b"content-length"}
# A body is held in memory up to this size, beyond it in a temporary file: a firmware upload
# (64 MiB) is read before the handler runs, and the handler's form parsing should hold the only
# copy of it in memory.
_SPOOL_BYTES = 1024 * 1024
_REPLAY_CHUNK = 64 * 1024


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
        # The route's own limit (the firmware upload's is larger than the app's).
        handler = scope.get("route_handler")
        limit = (handler.resolve_request_max_body_size() if handler is not None else None) or max_body_bytes
        announced = dict(scope["headers"]).get(b"content-length", b"")
        spooled = None if announced.isdigit() and int(announced) > limit else await _spool_body(receive, limit)
        if spooled is None:
            # Raised, so the route's own 413 (which may name its limit) answers.
            raise RequestEntityTooLarge("the request body is too large")
        body, body_hash = spooled
        path = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
        ids = (principal.tenant_id, principal.api_key_id, key_text)
        with body:
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
    answer: list[Message] = []

    async def keeping(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
                       if k.lower() not in _NOT_KEPT]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
        answer.append(message)

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
    # Kept first, answered second: a client that retries the moment it has its answer finds the
    # answer to replay, never the key still in progress (a 409 for a request that succeeded).
    for message in answer:
        await send(message)


def _replaying(body: IO[bytes], receive: Receive) -> Receive:
    """The body again, from the start, in chunks; then whatever the client sends next."""
    body.seek(0)
    done = False

    async def replay() -> Message:
        nonlocal done
        if done:
            return await receive()
        chunk = await _off_loop(body.read, _REPLAY_CHUNK)
        done = len(chunk) < _REPLAY_CHUNK
        return {"type": "http.request", "body": chunk, "more_body": not done}

    return replay


async def _spool_body(receive: Receive, limit: int) -> tuple[IO[bytes], bytes] | None:
    """The body in a temporary file (in memory while small) and its SHA-256; None over `limit`."""
    body = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - the caller closes it
    digest, size = hashlib.sha256(), 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                body.close()
                return None
            digest.update(chunk)
            await _off_loop(body.write, chunk)
            if not message.get("more_body", False):
                break
    except BaseException:
        body.close()
        raise
    return body, digest.digest()


async def _off_loop(method: Callable, *args: object) -> object:
    """Disk I/O once the file has rolled over to disk; in memory it is cheaper than a thread."""
    if getattr(method.__self__, "_rolled", False):
        return await asyncio.to_thread(method, *args)
    return method(*args)


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
