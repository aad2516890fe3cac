"""Distance matrices: great-circle times the road factor, and an OSRM-compatible table service
answered by a real small HTTP server (it computes its tables from great-circle distances)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import pytest

from fleet.collection.matrix import NO_ROUTE, HaversineMatrix, OsrmMatrix, matrix_provider
from fleet.collection.models import CollectionSettings
from fleet.collection.routing_problem import Place
from fleet.errors import RoutingServiceFailed
from fleet.workorders.routing import haversine_m

PLACES = [Place(f"p{i}", 37.50 + 0.011 * i, 126.90 + 0.017 * (i % 3)) for i in range(7)]


class TableService:
    """`GET /table/v1/driving/{lon,lat;...}?sources=&destinations=&annotations=` over HTTP/1.1."""

    def __init__(self, status: int = 200, unroutable: tuple[int, int] | None = None) -> None:
        self.status = status
        self.unroutable = unroutable
        self.requests: list[dict] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.answer, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        target = urlsplit(head.split(" ")[1])
        query = {k: v[0] for k, v in parse_qs(target.query).items()}
        self.requests.append({"path": target.path, **query})
        coords = [tuple(map(float, c.split(","))) for c in target.path.rsplit("/", 1)[1].split(";")]
        places = [Place(str(n), lat, lon) for n, (lon, lat) in enumerate(coords)]
        table = HaversineMatrix(1.0, 36.0).compute(places)
        sources = [int(i) for i in query["sources"].split(";")]
        targets = [int(j) for j in query["destinations"].split(";")]
        body = {"code": "Ok",
                "distances": [[table.distance_m[i][j] + 0.4 for j in targets] for i in sources],
                "durations": [[table.duration_s[i][j] for j in targets] for i in sources]}
        if self.unroutable is not None:
            body["distances"][self.unroutable[0]][self.unroutable[1]] = None
        if self.status != 200:
            body = {"code": "TooBig", "message": "Too many table coordinates"}
        data = json.dumps(body).encode()
        writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        await writer.drain()
        writer.close()


async def test_haversine_is_great_circle_times_the_road_factor():
    matrix = await HaversineMatrix(1.35, 22.0).matrix(uuid4(), PLACES)
    for a in range(len(PLACES)):
        assert matrix.distance_m[a][a] == 0
        for b in range(len(PLACES)):
            metres = haversine_m((PLACES[a].lat, PLACES[a].lon), (PLACES[b].lat, PLACES[b].lon)) * 1.35
            assert abs(matrix.distance_m[a][b] - metres) <= 1
            assert abs(matrix.duration_s[a][b] - metres / (22 / 3.6)) <= 1


async def test_the_table_service_is_asked_in_blocks_and_agrees_with_great_circle():
    service = TableService()
    async with service as url:
        matrix = await OsrmMatrix(url, block=3).matrix(uuid4(), PLACES)
    assert len(service.requests) == 9     # 7 points in blocks of 3: 3 x 3 requests
    assert all(r["annotations"] == "distance,duration" and r["path"].startswith("/table/v1/driving/")
               for r in service.requests)
    expected = HaversineMatrix(1.0, 36.0).compute(PLACES)
    assert matrix.duration_s == expected.duration_s
    assert all(abs(a - b) <= 1 for row, other in zip(matrix.distance_m, expected.distance_m, strict=True)
               for a, b in zip(row, other, strict=True))


async def test_a_city_asks_the_service_once_for_the_same_points():
    service = TableService()
    city, other_city = uuid4(), uuid4()
    async with service as url:
        provider = matrix_provider(CollectionSettings(), url)
        first = await provider.matrix(city, PLACES)
        again = await matrix_provider(CollectionSettings(), url).matrix(city, PLACES)
        assert again == first and len(service.requests) == 1
        await provider.matrix(other_city, PLACES)       # another city's cache is its own
        assert len(service.requests) == 2
    assert isinstance(matrix_provider(CollectionSettings(road_factor=2.0), None), HaversineMatrix)


async def test_a_pair_without_a_road_is_far_beyond_any_shift():
    async with TableService(unroutable=(1, 4)) as url:
        matrix = await OsrmMatrix(url).matrix(uuid4(), PLACES)
    assert matrix.distance_m[1][4] == NO_ROUTE


@pytest.mark.parametrize("status", [400, 503])
async def test_a_failing_service_fails_the_matrix_clearly(status):
    async with TableService(status=status) as url:
        with pytest.raises(RoutingServiceFailed, match=f"answered {status}"):
            await OsrmMatrix(url).matrix(uuid4(), PLACES)


async def test_a_service_that_is_not_there_fails_the_matrix_clearly():
    async with TableService() as url:
        pass    # closed again: nothing listens on the port
    with pytest.raises(RoutingServiceFailed, match="failed"):
        await OsrmMatrix(url, timeout_s=2).matrix(uuid4(), PLACES)
