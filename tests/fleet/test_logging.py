"""The log's configuration: libraries that log every request or peer stay quiet at INFO; queries lose their secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import structlog

import pytest

from fleet import logging as fleet_logging
from fleet.logging import QUIET_LIBRARIES, configure_logging, redact_query, set_worker
from fleet.settings import LogSettings


@pytest.fixture
def configured():
    """configure_logging for one test, the process's logging as it was afterwards."""
    root = logging.getLogger()
    handlers, level, config, worker = root.handlers[:], root.level, structlog.get_config(), fleet_logging._worker
    try:
        yield configure_logging
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.NOTSET)
        structlog.configure(**config)
        set_worker(worker)


def test_an_http_client_request_is_not_an_info_line(configured):
    configured(LogSettings(format="json"))
    # The demo's own set-up calls its API through httpx: one INFO line per call was noise.
    # aiocoap's line per refused request, block-wise step or unreachable peer, likewise.
    for name in ("httpx", "coap-server", "coap"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name


def test_every_line_names_its_worker(configured, capsys):
    configured(LogSettings(format="json"))
    set_worker("supervisor")
    structlog.get_logger("test").info("fleet serving")
    logging.getLogger("uvicorn.error").warning("a library's line")
    structlog.get_logger("test").warning("worker stopped unexpectedly", worker="coap-2")  # about another
    set_worker(None)  # a single-process command
    structlog.get_logger("test").info("fleet serving")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line.get("worker") for line in lines] == ["supervisor", "supervisor", "coap-2", None]


def test_a_worker_is_named_by_its_environment():
    # What the supervisor gives each worker process it starts.
    code = ("from fleet.logging import configure_logging; from fleet.settings import LogSettings; import structlog;"
            "configure_logging(LogSettings(format='json')); structlog.get_logger().info('started')")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         env={**os.environ, "FLEET_WORKER": "http-2"})
    assert json.loads(ran.stderr)["worker"] == "http-2"


def test_a_line_is_one_write_so_processes_sharing_stderr_never_splice_lines(configured, monkeypatch):
    # A node's workers write to the supervisor's stderr (unbuffered): a line and its newline
    # written apart let another process's line in between ('{...}{...}\n\n'), and neither parses.
    writes: list[str] = []

    class Stderr(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    monkeypatch.setattr(sys, "stderr", Stderr())
    configured(LogSettings(format="json"))
    structlog.get_logger("test").info("started")
    logging.getLogger("uvicorn.error").warning("a library's line")
    assert [json.loads(text)["event"] for text in writes] == ["started", "a library's line"]
    assert all(text.endswith("\n") for text in writes)


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
