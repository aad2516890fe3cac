"""One log line per request, carrying request id, city, method, path, status and duration."""

from __future__ import annotations

import httpx
import structlog
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

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

