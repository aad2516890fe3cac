"""Prometheus's `/metrics` on a port of its own, and the HTTP API's request counts and latencies."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator

import structlog
from litestar.types import Scope
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from fleet.db import Database
from fleet.metrics import HTTP_DURATION, HTTP_REQUESTS
from fleet.metrics.service import CityGauges, PoolGauges
from fleet.settings import MetricsSettings

log = structlog.get_logger(__name__)

READ_S = 10.0  # a scraper that does not finish its request line and headers by then is dropped
MAX_HEAD_BYTES = 16 * 1024


class MetricsPortTaken(Exception):
    """The metrics port cannot be bound; the message names the settings that move it."""


class _ProcessWide(Collector):
    """The process's own instruments (prometheus_client's default registry: fleet_* counters,
    process_* and python_* families), served next to this server's collectors."""

    def collect(self):
        return REGISTRY.collect()


def count_request(scope: Scope, status: int, duration_s: float) -> None:
    """Count an HTTP request by its route template (`/api/v1/devices/{device_id:uuid}`, never
    the raw path: one series per route, not per device) and status, and its time."""
    # Set by the router once a route matched; unknown paths share one series.
    route = scope.get("path_template") or "unmatched"
    HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
    HTTP_DURATION.labels(scope["method"], route).observe(duration_s)


class MetricsServer:
    """A minimal HTTP/1.1 server for GET /metrics on the event loop: the database gauges are
    read asynchronously before each scrape (cached), and it stops with the process."""

    def __init__(self, db: Database, settings: MetricsSettings) -> None:
        self.settings = settings
        self.city = CityGauges(db)
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in (_ProcessWide(), PoolGauges(db), self.city):
            self.registry.register(collector)
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}  # answers under way

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections[task] = writer
        try:
            await self._exchange(reader, writer)
        finally:
            self._connections.pop(task, None)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines[1:] if line)}
        extra = ""  # more header lines
        if path != "/metrics":
            status, content_type, body = "404 Not Found", "text/plain", b"metrics are at /metrics\n"
        elif method not in ("GET", "HEAD"):
            status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
        elif not self._authorized(headers.get("authorization", "")):
            status, content_type, body = "401 Unauthorized", "text/plain", b"Authorization: Bearer <token> needed\n"
            extra = "WWW-Authenticate: Bearer\r\n"
        else:
            await self.city.refresh()
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            status, body = "200 OK", encoder(self.registry)
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                     f"{extra}Connection: close\r\n\r\n".encode("latin-1") + (body if method != "HEAD" else b""))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _authorized(self, authorization: str) -> bool:
        """Whether the scrape may read: no token set, or `Bearer <token>` (compared in constant
        time: a scraper probing it learns nothing from how long a refusal takes)."""
        token = self.settings.token
        if token is None:
            return True
        scheme, _, credentials = authorization.partition(" ")
        # The header was decoded as latin-1: encoded back, it is the bytes the scraper sent.
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode("latin-1"),
                                                                  token.encode())

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[MetricsServer]:
        """Listen on the configured address until the block ends (nothing when the port is 0)."""
        host, port = self.settings.host, self.settings.port
        if port == 0:
            yield self
            return
        try:
            server = await asyncio.start_server(self._answer, host, port, limit=MAX_HEAD_BYTES)
        except OSError as exc:
            reason = exc.strerror or str(exc)  # a host that does not resolve has a negative errno
            raise MetricsPortTaken(
                f"cannot serve metrics on {host}:{port}: {reason}; choose another port with "
                "FLEET_METRICS_PORT or --metrics-port (0 turns metrics off)") from None
        log.debug("metrics served", url=f"http://{host}:{port}/metrics")
        try:
            yield self
        finally:
            server.close()
            # A scraper still sending its request would hold the process up to READ_S: since
            # Python 3.12 wait_closed() waits for every connection (on 3.11 its answer is
            # cancelled at the loop's end, with a traceback). Dropped, its read ends at once.
            answers = list(self._connections.items())
            for _, writer in answers:
                writer.transport.abort()
            await asyncio.gather(*(task for task, _ in answers), return_exceptions=True)
            await server.wait_closed()
