"""/api/v1/events: the city's events as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import Parameter
from litestar.response import Stream
from litestar.response.sse import ServerSentEventMessage

from api.openapi import EventStreamOperation
from api.problems import problems
from api.middleware import SESSION_COOKIE
from fleet.access.models import Principal
from fleet.access.service import ApiKeyService, SessionService
from fleet.errors import FieldError, FleetError, Unauthenticated, ValidationFailed
from fleet.events.models import Event, EventFilter, KeepAlive, Opening, Passed
from fleet.events.service import EventService

# What a client waits before reconnecting after the connection drops (EventSource honours it).
RETRY_MS = 3000
POSITION = r"^\s*[0-9]{1,19}-[0-9]{1,19}\s*$"
KINDS = r"^[a-z_.,]{0,1000}$"


class EventData(msgspec.Struct):
    """The `data:` of each SSE message."""

    kind: str
    at: datetime
    subject_type: str
    subject_id: str
    payload: dict[str, Any]


_encode = msgspec.json.Encoder().encode


def _message(item: Event | Passed | KeepAlive) -> bytes:
    if isinstance(item, Event):
        data = _encode(EventData(item.kind, item.at, item.subject_type, item.subject_id, item.payload))
        return ServerSentEventMessage(data=data, event=item.kind, id=item.position.token()).encode()
    if isinstance(item, Passed):
        # An id alone moves the client's Last-Event-ID past events it did not ask for.
        return ServerSentEventMessage(data=None, id=item.position.token()).encode()
    return ServerSentEventMessage(data=None, comment="keep-alive").encode()


async def _stream(opening: Opening, items: AsyncIterator[Event | Passed | KeepAlive],
                  still_authorized) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(items):
        # The start's position as an id without data: a client that loses the connection before
        # any event comes resumes from here (EventSource sends it back), not from a later "now".
        yield ServerSentEventMessage(data=None, retry=RETRY_MS,
                                     id=None if opening.reset else opening.position.token()).encode()
        if opening.reset is not None:
            yield ServerSentEventMessage(data=_encode({"reason": opening.reset}), event="reset",
                                         id=opening.position.token()).encode()
        async for item in items:
            # A key revoked while its stream is open ends the stream at the next keep-alive.
            if isinstance(item, KeepAlive) and not await still_authorized():
                return
            yield _message(item)


@get("/api/v1/events", summary="The city's events, live, as Server-Sent Events (text/event-stream)",
     description=(
         "Alarms, work orders, device status changes and command outcomes of the caller's city, "
         "in commit order, as they happen. Each message has `id:` (a position), `event:` (the kind) "
         "and `data:` (JSON: kind, at, subject_type, subject_id, payload). Without `Last-Event-ID` "
         "the stream starts now; with it, right after that position, with nothing missed or repeated. "
         "If retention already deleted events after it, an `event: reset` (data `{\"reason\": "
         "\"pruned\"}`) comes first and the stream continues with what is kept; a position this "
         "server never gave out gives `reset` with reason `unknown` and starts now. The first message "
         "carries `retry:` and the `id:` the stream starts at, without data. Comment lines "
         "(`: keep-alive`) come every 15 s; an `id:` without data moves the position past events "
         "the `kinds` filter left out."),
     tags=["events"], operation_class=EventStreamOperation, responses=problems(403, 422))
async def events(
    request: Request, principal: Principal, event_service: EventService, apikey_service: ApiKeyService,
    session_service: SessionService,
    last_event_id_header: Annotated[str | None, Parameter(
        header="Last-Event-ID", required=False, pattern=POSITION,
        description="Resume after this event's id (EventSource sends it when it reconnects)")] = None,
    last_event_id: Annotated[str | None, Parameter(
        required=False, pattern=POSITION,
        description="The same, for clients that cannot set headers; the header wins")] = None,
    kinds: Annotated[str | None, Parameter(
        required=False, pattern=KINDS,
        description="Comma-separated kinds (alarm.raised) or subjects (alarm, work_order, device, command)")] = None,
) -> Stream:
    try:
        wanted = EventFilter.parse(kinds)
    except ValueError as exc:
        raise ValidationFailed("invalid kinds", [FieldError("kinds", str(exc))]) from None
    opening = await event_service.open(principal, last_event_id_header or last_event_id)
    secret = request.headers.get("authorization", "").partition(" ")[2].strip()
    # A browser's stream came with its session cookie: the session must still be live (signed
    # out, idle too long, or its key revoked ends the stream just the same).
    session_secret = request.cookies.get(SESSION_COOKIE, "") if principal.session_id else ""

    async def still_authorized() -> bool:
        try:
            if session_secret:
                await session_service.authenticate(session_secret)
            else:
                await apikey_service.authenticate(secret)
        except Unauthenticated:
            return False
        except FleetError:
            return True  # the database is busy or away: the key was good, keep streaming
        return True

    return Stream(_stream(opening, event_service.follow(principal, opening.position, wanted), still_authorized),
                  media_type="text/event-stream",
                  headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
