"""Prometheus's `/metrics` on a port of its own (a process's, or its node's merged from the workers'), and HTTP request counts."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from collections.abc import AsyncIterator, Callable

import structlog
from litestar.types import Scope
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from fleet.db import Database
from fleet.metrics import HTTP_DURATION, HTTP_REQUESTS
from fleet.metrics.aggregate import NodeAggregate
from fleet.metrics.service import READ_TIMEOUT_S, CityGauges, PoolGauges
from fleet.settings import MetricsSettings

log = structlog.get_logger(__name__)

READ_S = 10.0  # a scraper that does not finish its request line and headers by then is dropped
MAX_HEAD_BYTES = 16 * 1024
# A worker that has not answered the supervisor by then is left out of the scrape: longer than
# the city-wide gauges' read may hold the worker that has them, shorter than the 10 s after
# which Prometheus gives up on the whole scrape by default.
WORKER_TIMEOUT_S = READ_TIMEOUT_S + 2.0


class MetricsPortTaken(Exception):
    """The metrics port cannot be bound; the message names the settings that move it."""


class _ProcessWide(Collector):
    """A registry's instruments (the process's default one but in tests: fleet_* counters,
    process_* and python_* families), served next to this server's collectors."""

    def __init__(self, source: CollectorRegistry = REGISTRY) -> None:
        self.source = source

    def collect(self):
        return self.source.collect()


def count_request(scope: Scope, status: int, duration_s: float) -> None:
    """Count an HTTP request by its route template (`/api/v1/devices/{device_id:uuid}`, never
    the raw path: one series per route, not per device) and status, and its time."""
    # Set by the router once a route matched; unknown paths share one series.
    route = scope.get("path_template") or "unmatched"
    HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
    HTTP_DURATION.labels(scope["method"], route).observe(duration_s)


class _Endpoint:
    """A minimal HTTP/1.1 server for GET /metrics on the event loop, stopping with the process;
    what it answers is its subclass's (`_body`)."""

    token: str | None = None  # when set, a scrape must send `Authorization: Bearer <token>`

    def __init__(self) -> None:
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}  # answers under way

    async def _body(self, accept: str) -> tuple[bytes, str]:
        """The scrape's body and its content type, for the scraper's Accept header."""
        raise NotImplementedError

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
            body, content_type = await self._body(headers.get("accept", ""))
            status = "200 OK"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                     f"{extra}Connection: close\r\n\r\n".encode("latin-1") + (body if method != "HEAD" else b""))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _authorized(self, authorization: str) -> bool:
        """Whether the scrape may read: no token set, or `Bearer <token>` (compared in constant
        time: a scraper probing it learns nothing from how long a refusal takes)."""
        token = self.token
        if token is None:
            return True
        scheme, _, credentials = authorization.partition(" ")
        # The header was decoded as latin-1: encoded back, it is the bytes the scraper sent.
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode("latin-1"),
                                                                  token.encode())

    @contextlib.asynccontextmanager
    async def _listening(self, settings: MetricsSettings) -> AsyncIterator[None]:
        """Listen on the configured address until the block ends (nothing when the port is 0)."""
        host, port = settings.host, settings.port
        if port == 0:
            yield
            return
        try:
            server = await asyncio.start_server(self._answer, host, port, limit=MAX_HEAD_BYTES)
        except OSError as exc:
            reason = exc.strerror or str(exc)  # a host that does not resolve has a negative errno
            raise MetricsPortTaken(
                f"cannot serve metrics on {host}:{port}: {reason}; choose another port with "
                "FLEET_METRICS_PORT or --metrics-port (0 turns metrics off)") from None
        log.debug("metrics served", url=f"http://{host}:{port}/metrics")
        async with self._closing(server):
            yield

    @contextlib.asynccontextmanager
    async def _closing(self, server: asyncio.Server) -> AsyncIterator[None]:
        try:
            yield
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


def _registry(db: Database, source: CollectorRegistry, city: CityGauges | None) -> CollectorRegistry:
    """What one process serves: its instruments, its pools and, in one process, the city's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (_ProcessWide(source), PoolGauges(db), city):
        if collector is not None:
            registry.register(collector)
    return registry


class MetricsServer(_Endpoint):
    """This process's /metrics: the database gauges are read asynchronously before each scrape
    (cached)."""

    def __init__(self, db: Database, settings: MetricsSettings) -> None:
        super().__init__()
        self.settings = settings
        self.token = settings.token
        self.city = CityGauges(db)
        self.registry = _registry(db, REGISTRY, self.city)

    async def _body(self, accept: str) -> tuple[bytes, str]:
        await self.city.refresh()
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[MetricsServer]:
        """Listen on the configured address until the block ends (nothing when the port is 0)."""
        async with self._listening(self.settings):
            yield self


class WorkerMetrics(_Endpoint):
    """A worker process's /metrics on a Unix socket, for its node's supervisor to merge (no
    token: the socket's directory is the supervisor's own, mode 0700)."""

    def __init__(self, db: Database, path: str, *, city: bool, registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__()
        self.path = path
        self.city = CityGauges(db) if city else None
        self.registry = _registry(db, registry, self.city)

    async def _body(self, accept: str) -> tuple[bytes, str]:
        if self.city is not None:
            await self.city.refresh()
        # Always the text format the supervisor parses, whatever the scraper asked it for.
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[WorkerMetrics]:
        # A socket file left by this worker's predecessor is replaced.
        server = await asyncio.start_unix_server(self._answer, self.path, limit=MAX_HEAD_BYTES)
        try:
            async with self._closing(server):
                yield self
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def worker_metrics(db: Database, path: str, *, city: bool, registry: CollectorRegistry = REGISTRY) -> WorkerMetrics:
    """A worker's /metrics on the Unix socket `path`: its instruments (`registry`, the process's
    default one but in tests), its pools, and the city's gauges when `city` (one worker of the
    node: they count the database, not the process, and would be summed otherwise)."""
    return WorkerMetrics(db, path, city=city, registry=registry)


class _Families:
    """Families already collected, for prometheus_client's encoders (which ask a registry)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class NodeMetrics(_Endpoint):
    """The node's /metrics, served by its supervisor: each scrape asks every worker (their Unix
    sockets, `sockets()` read anew each time: workers come and go) and serves the merge
    (fleet.metrics.aggregate), with the supervisor's own process_* and python_* families."""

    def __init__(self, settings: MetricsSettings, sockets: Callable[[], dict[str, str]],
                 *, registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__()
        self.settings = settings
        self.token = settings.token
        self.sockets = sockets
        self.registry = registry
        self.aggregate = NodeAggregate()
        self.silent: set[str] = set()  # workers whose last scrape failed: logged once per streak
        # One scrape at a time: an older scrape merged after a newer one would look like a reset.
        self._lock = asyncio.Lock()

    async def _body(self, accept: str) -> tuple[bytes, str]:
        async with self._lock:
            paths = self.sockets()
            answers = await asyncio.gather(*(self._ask(name, path) for name, path in paths.items()))
            scrapes = {"supervisor": [family for family in self.registry.collect()
                                      if not family.name.startswith("fleet_")]}
            scrapes |= {name: families for name, families in zip(paths, answers, strict=True) if families is not None}
            merged = self.aggregate.merge(scrapes)
        encoder, content_type = choose_encoder(accept)
        return encoder(_Families(merged)), content_type

    async def _ask(self, name: str, path: str) -> list[Metric] | None:
        """A worker's families, or None (logged when it starts failing) when it does not answer."""
        try:
            async with asyncio.timeout(WORKER_TIMEOUT_S):
                text = await scrape_unix(path)
            families = list(text_string_to_metric_families(text))
        except Exception as exc:  # noqa: BLE001 - one worker's failure leaves it out, never the scrape
            if name not in self.silent:
                self.silent.add(name)
                log.warning("a worker's metrics did not answer: its gauges are left out until it does",
                            worker=name, error=repr(exc))
            return None
        if name in self.silent:
            self.silent.discard(name)
            log.info("a worker's metrics answer again", worker=name)
        return families

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[NodeMetrics]:
        """Listen on the configured address until the block ends (nothing when the port is 0)."""
        async with self._listening(self.settings):
            yield self


async def scrape_unix(path: str) -> str:
    """GET /metrics from a worker's Unix socket: the body of its 200 answer."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = await reader.read()  # until it closes: it answers one request per connection
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.partition(b"\r\n")[0].decode("latin-1")
    if status.split(" ")[1:2] != ["200"]:
        raise ConnectionError(f"answered {status!r}")
    return body.decode()
