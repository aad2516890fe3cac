"""Distances and durations between places: the seam with two real implementations, great-circle
distance times the city's road factor (the default), and an OSRM-compatible table service when
FLEET_ROUTING_URL is set; cached per city.

Interface: `MatrixProvider.matrix(tenant_id, places) -> Matrix` (metres and seconds, integers).

When the table service fails, the plan fails with `RoutingServiceFailed` (a 503 over REST) and
does not quietly fall back to straight lines: a plan on great-circle distances where the city
asked for road distances would look right and drive wrong. The cache keeps whole matrices, per
node, keyed by the city, the service and the exact points: planning the same bins again (a retry,
the REST plan after the evening one) asks the service nothing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

import httpx
import numpy as np
import structlog

from fleet.collection.models import CollectionSettings
from fleet.collection.routing_problem import Matrix, Place
from fleet.errors import RoutingServiceFailed

log = structlog.get_logger(__name__)

EARTH_RADIUS_M = 6_371_008.8
# OSRM's default --max-table-size is 100: each request asks for at most a block this big.
BLOCK = 100
# A pair the road network cannot connect (OSRM answers null): far beyond any shift, so the
# solver reports the bin unreachable instead of routing through it.
NO_ROUTE = 10_000_000


class MatrixProvider(Protocol):
    async def matrix(self, tenant_id: UUID, places: Sequence[Place]) -> Matrix: ...


class HaversineMatrix:
    """Great-circle distance times the road factor; durations at the city's average speed."""

    def __init__(self, road_factor: float, speed_kmh: float) -> None:
        self.road_factor = road_factor
        self.speed_m_s = speed_kmh / 3.6

    async def matrix(self, tenant_id: UUID, places: Sequence[Place]) -> Matrix:
        return self.compute(places)

    def compute(self, places: Sequence[Place]) -> Matrix:
        lat = np.radians([p.lat for p in places])[:, None]
        lon = np.radians([p.lon for p in places])[:, None]
        a = (np.sin((lat - lat.T) / 2) ** 2
             + np.cos(lat) * np.cos(lat.T) * np.sin((lon - lon.T) / 2) ** 2)
        metres = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1))) * self.road_factor
        return Matrix(np.rint(metres).astype(np.int64).tolist(),
                      np.rint(metres / self.speed_m_s).astype(np.int64).tolist())


class OsrmMatrix:
    """An OSRM-compatible `table` service: `GET {url}/table/v1/driving/{lon,lat;...}` asked in
    blocks of at most BLOCK x BLOCK points (`sources`/`destinations`), a few at a time."""

    def __init__(self, url: str, *, timeout_s: float = 30.0, concurrency: int = 4, block: int = BLOCK) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.block = block

    async def matrix(self, tenant_id: UUID, places: Sequence[Place]) -> Matrix:
        n = len(places)
        distance = [[0] * n for _ in range(n)]
        duration = [[0] * n for _ in range(n)]
        starts = range(0, n, self.block)
        gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            async def one(row: int, col: int) -> None:
                async with gate:
                    await self._block(client, places, row, col, distance, duration)
            try:
                async with asyncio.TaskGroup() as group:
                    for row in starts:
                        for col in starts:
                            group.create_task(one(row, col))
            except ExceptionGroup as failed:
                # One failed block is the service's failure; the others were cancelled with it.
                first = failed.subgroup(RoutingServiceFailed)
                if first is None:
                    raise
                raise first.exceptions[0] from None
        return Matrix(distance, duration)

    async def _block(self, client: httpx.AsyncClient, places: Sequence[Place], row: int, col: int,
                     distance: list[list[int]], duration: list[list[int]]) -> None:
        sources = places[row:row + self.block]
        targets = places[col:col + self.block]
        coords = ";".join(f"{p.lon:.6f},{p.lat:.6f}" for p in (*sources, *targets))
        params = {"annotations": "distance,duration",
                  "sources": ";".join(str(i) for i in range(len(sources))),
                  "destinations": ";".join(str(len(sources) + j) for j in range(len(targets)))}
        try:
            response = await client.get(f"{self.url}/table/v1/driving/{coords}", params=params)
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("routing service unreachable", url=self.url, error=repr(exc))
            raise RoutingServiceFailed(f"the routing service at {self.url} failed: {exc!r}") from exc
        if not isinstance(body, dict) or body.get("code") != "Ok":
            detail = response.text[:200] if body is None else str(body.get("message") or body.get("code"))
            log.warning("routing service refused a table", url=self.url, status=response.status_code, detail=detail)
            raise RoutingServiceFailed(f"the routing service at {self.url} answered {response.status_code}: {detail}")
        try:
            tables = body["distances"], body["durations"]
            if any(len(t) != len(sources) or any(len(r) != len(targets) for r in t) for t in tables):
                raise ValueError("a table of the wrong size")
            for i, (metres, seconds) in enumerate(zip(*tables, strict=True)):
                for j, (m, s) in enumerate(zip(metres, seconds, strict=True)):
                    distance[row + i][col + j] = NO_ROUTE if m is None else round(m)
                    duration[row + i][col + j] = NO_ROUTE if s is None else round(s)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("routing service answered a malformed table", url=self.url, error=repr(exc))
            raise RoutingServiceFailed(f"the routing service at {self.url} answered a malformed table: {exc}") from exc


class CachedMatrix:
    """A provider's matrices kept per node, least recently used out first."""

    def __init__(self, provider: MatrixProvider, key: str, cache: OrderedDict, size: int) -> None:
        self.provider = provider
        self.key = key
        self.cache = cache
        self.size = size

    async def matrix(self, tenant_id: UUID, places: Sequence[Place]) -> Matrix:
        key = (tenant_id, self.key, tuple((round(p.lat, 6), round(p.lon, 6)) for p in places))
        if (hit := self.cache.get(key)) is not None:
            self.cache.move_to_end(key)
            return hit
        matrix = await self.provider.matrix(tenant_id, places)
        self.cache[key] = matrix
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return matrix


# Per node, across plans: at 2,000 bins a matrix is some 300 MB of Python ints, so only two.
_MATRICES: OrderedDict = OrderedDict()
CACHE_SIZE = 2


def matrix_provider(settings: CollectionSettings, routing_url: str | None) -> MatrixProvider:
    """The city's provider: road distances from the table service when one is configured, else
    great-circle distances times the city's road factor (cheap to compute, so not cached)."""
    if routing_url:
        return CachedMatrix(OsrmMatrix(routing_url), routing_url, _MATRICES, CACHE_SIZE)
    return HaversineMatrix(settings.road_factor, settings.speed_kmh)

