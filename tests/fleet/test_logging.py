"""The log's configuration: libraries that log every request or peer stay quiet at INFO; queries lose their secrets."""

from __future__ import annotations

import logging

import structlog

import pytest

from fleet.logging import QUIET_LIBRARIES, configure_logging, redact_query
from fleet.settings import LogSettings


def test_an_http_client_request_is_not_an_info_line():
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    try:
        configure_logging(LogSettings(format="json"))
        # The demo's own set-up calls its API through httpx: one INFO line per call was noise.
        # aiocoap's line per refused request, block-wise step or unreachable peer, likewise.
        for name in ("httpx", "coap-server", "coap"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
            assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.NOTSET)
        structlog.configure(**config)


@pytest.mark.parametrize(("query", "logged"), [
    ("", ""),
    ("kind=streetlight&limit=5", "kind=streetlight&limit=5"),
    ("api_key=fleet_abc_def&jurisdiction_id=seoul", "api_key=REDACTED&jurisdiction_id=seoul"),
    ("key=1&token=2&secret=3&password=4&access_token=5&signature=6", "key=REDACTED&token=REDACTED"
     "&secret=REDACTED&password=REDACTED&access_token=REDACTED&signature=REDACTED"),
    # Whatever the case or encoding of the name; names ending in _key or _token too.
    ("API_KEY=x&Api%5Fkey=y&crew_token=z&upload-key=w", "API_KEY=REDACTED&Api%5Fkey=REDACTED"
     "&crew_token=REDACTED&upload-key=REDACTED"),
    # A name alone has no value to hide; "keys", "monkey" and "token_count" are not secrets.
    ("token&keys=a&monkey=b&token_count=3", "token&keys=a&monkey=b&token_count=3"),
    ("near=37.5,127.0&api_key=", "near=37.5,127.0&api_key=REDACTED"),
])
def test_a_query_keeps_everything_but_its_secrets(query, logged):
    assert redact_query(query) == logged


def test_a_long_query_is_cut():
    logged = redact_query("q=" + "x" * 5000)
    assert len(logged) == 1001 and logged.endswith("…")
