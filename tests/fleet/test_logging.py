"""The log's configuration: libraries that log every request they make stay quiet at INFO."""

from __future__ import annotations

import logging

import structlog

from fleet.logging import configure_logging
from fleet.settings import LogSettings


def test_an_http_client_request_is_not_an_info_line():
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    try:
        configure_logging(LogSettings(format="json"))
        # The demo's own set-up calls its API through httpx: one INFO line per call was noise.
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(logging.NOTSET)
        structlog.configure(**config)
