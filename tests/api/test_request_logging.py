"""One log line per request, carrying request id, city, method, path, status and duration."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import httpx
import structlog
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from fleet.registry.service import DeviceService

FIELDS = {"request_id", "tenant", "method", "path", "status", "duration_ms"}


def request_lines(logs: list[dict]) -> list[dict]:
    return [entry for entry in logs if entry["event"] == "request"]


async def test_one_line_per_request(seoul):
    with capture_logs(processors=[merge_contextvars]) as logs:
        ok = await seoul.client.get("/api/v1/devices", params={"kind": "streetlight"})
        chosen = await seoul.client.get("/api/v1/tenant", headers={"X-Request-ID": "trace-abc.123"})
        bad = await seoul.client.get("/api/v1/devices", params={"limit": "x"})
        missing = await seoul.client.get("/api/v1/no-such-thing")
        wrong_method = await seoul.client.put("/api/v1/devices")
        async with httpx.AsyncClient(base_url=str(seoul.client.base_url)) as anonymous:
            unauthenticated = await anonymous.get("/api/v1/devices")
            health = await anonymous.get("/healthz")
    responses = [ok, chosen, bad, missing, wrong_method, unauthenticated, health]
    lines = request_lines(logs)
    assert len(lines) == len(responses), lines
    for line, response in zip(lines, responses, strict=True):
        assert FIELDS <= set(line), line
        assert line["request_id"] == response.headers["x-request-id"]
        assert (line["method"], line["path"], line["status"]) == (
            response.request.method, response.request.url.path, response.status_code)
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["log_level"] == "info"
    assert chosen.headers["x-request-id"] == "trace-abc.123"
    assert [line["tenant"] for line in lines] == ["seoul", "seoul", "seoul", None, None, None, None]
    assert len({line["request_id"] for line in lines}) == len(lines)
    # The request id does not outlive its request.
    assert "request_id" not in structlog.contextvars.get_contextvars()


async def test_request_id_reaches_problems_and_stays_safe(seoul):
    for sent in ("x" * 65, "has space", "naïve", "tab\there"):
        response = await seoul.client.get("/api/v1/devices/export", params={"format": "x"},
                                          headers={"X-Request-ID": sent.encode("latin-1")})
        assert response.status_code == 400
        generated = response.headers["x-request-id"]
        assert generated != sent and len(generated) == 32
        assert response.json()["request_id"] == generated



async def test_the_line_carries_the_query_with_its_secrets_redacted(seoul):
    with capture_logs(processors=[merge_contextvars]) as logs:
        await seoul.client.get("/api/v1/devices", params={"kind": "streetlight", "limit": "5"})
        await seoul.client.get("/open311/v2/services.json", params={"api_key": seoul.key, "jurisdiction_id": "x"})
        await seoul.client.get("/api/v1/devices")
    listed, open311, plain = request_lines(logs)
    assert listed["query"] == "kind=streetlight&limit=5"
    assert open311["query"] == "api_key=REDACTED&jurisdiction_id=x" and seoul.key not in str(logs)
    assert "query" not in plain


def _read_a_little_and_reset(host: str, port: int, key: str) -> None:
    """A client that stops reading mid-download (`curl … | head -c 100`), in a thread of its
    own: the server's loop writing the export gives no other task a turn."""
    with socket.create_connection((host, port)) as client:
        client.sendall(f"GET /api/v1/devices/export?format=geojson HTTP/1.1\r\nHost: {host}\r\n"
                       f"Authorization: Bearer {key}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < 100:
            received += client.recv(100)
        # Gone at once, as a reader that exits does: the server's next write meets a reset.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_an_aborted_download_logs_one_line(db, seoul, caplog):
    """One line (the request's) for a client that went away mid-export, not a "socket.send()
    raised exception." for each chunk written after it did."""
    await DeviceService(db).import_rows(seoul.principal, [
        (n, {"kind": "waste_bin", "endpoint": f"bin-{n:04d}", "lat": 37.5, "lon": 127.0, "waste_kind": "paper"})
        for n in range(1, 1001)])
    url = httpx.URL(str(seoul.client.base_url))
    with capture_logs(processors=[merge_contextvars]) as logs, caplog.at_level(logging.WARNING, logger="asyncio"):
        await asyncio.to_thread(_read_a_little_and_reset, url.host, url.port, seoul.key)
        for _ in range(1000):
            if request_lines(logs):
                break
            await asyncio.sleep(0.01)
    (line,) = request_lines(logs)
    assert line["path"] == "/api/v1/devices/export"
    assert len([r for r in caplog.records if r.name == "asyncio"]) <= 1, caplog.records[:3]
