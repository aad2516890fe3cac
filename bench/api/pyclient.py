"""The Python fallback load generator: raw asyncio HTTP/1.1 on keep-alive connections.

Each connection sends a request, reads the whole response (Content-Length framing, which is
what Litestar sends), records the latency and sends the next one: a closed loop at fixed
concurrency, like wrk. In a cursor walk every connection follows its own chain of
`next_cursor`s. Connections are spread over worker processes (uvloop when installed), which
connect first and then start together; each stops at the deadline or after its share of
`max_requests`, whichever comes first.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import re
import time
from array import array
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.api.results import LoadResult, percentile_ms
from bench.api.scenarios import Scenario, cursor_path

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_NEXT_CURSOR = re.compile(rb'"next_cursor":"([^"]+)"')


@dataclass
class _WorkerResult:
    responses: int = 0
    ok: int = 0
    non_2xx: int = 0
    empty: int = 0
    socket_errors: int = 0
    latencies: array = field(default_factory=lambda: array("d"))
    started: float = math.inf
    finished: float = 0.0
    cursors: set[bytes] = field(default_factory=set)


async def _connection(host: str, port: int, scenario: Scenario, header_block: bytes, offset: int,
                      start_at: float, deadline: float, budget: list[int], result: _WorkerResult) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        result.socket_errors += 1
        return
    await asyncio.sleep(max(0.0, start_at - time.time()))
    result.started = min(result.started, time.perf_counter())
    paths = [p.encode() for p in scenario.paths]
    cursor: bytes | None = None
    sent = offset
    try:
        while budget[0] > 0 and time.time() < deadline:
            budget[0] -= 1
            if scenario.cursor_walk:
                path = cursor_path(scenario.paths[0], cursor.decode()).encode() if cursor else paths[0]
            else:
                path = paths[sent % len(paths)]
            sent += 1
            began = time.perf_counter()
            writer.write(b"GET " + path + b" HTTP/1.1\r\n" + header_block)
            head = await reader.readuntil(b"\r\n\r\n")
            length = _CONTENT_LENGTH.search(head)
            if length is None:
                raise ConnectionError("response without Content-Length")
            body = await reader.readexactly(int(length.group(1)))
            result.latencies.append(time.perf_counter() - began)
            result.responses += 1
            status = int(head[9:12])
            if 200 <= status < 300:
                result.ok += 1
                if scenario.expect_items and b'"items":[]' in body:
                    result.empty += 1
                if scenario.cursor_walk:
                    found = _NEXT_CURSOR.search(body)
                    cursor = found.group(1) if found else None
                    if cursor:
                        result.cursors.add(cursor)
            else:
                result.non_2xx += 1
                cursor = None
    except (OSError, asyncio.IncompleteReadError, ConnectionError):
        result.socket_errors += 1
    finally:
        result.finished = max(result.finished, time.perf_counter())
        writer.close()


async def _worker(base_url: str, scenario: Scenario, key: str, connections: int, first: int,
                  start_at: float, duration: float, max_requests: int) -> _WorkerResult:
    url = urlsplit(base_url)
    headers = [f"Host: {url.netloc}", "Connection: keep-alive"]
    if scenario.authenticated:
        headers.append(f"Authorization: Bearer {key}")
    header_block = ("\r\n".join(headers) + "\r\n\r\n").encode()
    result = _WorkerResult()
    budget = [max_requests]
    await asyncio.gather(*(
        _connection(url.hostname, url.port, scenario, header_block, (first + n) * 7919, start_at,
                    start_at + duration, budget, result) for n in range(connections)))
    return result


def _worker_main(pipe, *args) -> None:
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(_worker(*args))
    pipe.send((result.responses, result.ok, result.non_2xx, result.empty, result.socket_errors,
               result.latencies.tobytes(), result.started, result.finished, result.cursors))
    pipe.close()


def run(base_url: str, scenario: Scenario, key: str, *, concurrency: int, duration: float,
        processes: int, max_requests: int) -> LoadResult:
    processes = max(1, min(processes, concurrency))
    context = multiprocessing.get_context("fork")
    start_at = time.time() + 1.0  # time for every worker to fork and connect
    workers = []
    first = 0
    for n in range(processes):
        connections = concurrency // processes + (1 if n < concurrency % processes else 0)
        receiver, sender = context.Pipe(duplex=False)
        proc = context.Process(target=_worker_main, args=(
            sender, base_url, scenario, key, connections, first, start_at, duration,
            max_requests // processes))
        proc.start()
        sender.close()
        workers.append((proc, receiver))
        first += connections
    total = _WorkerResult()
    latencies = array("d")
    for proc, receiver in workers:
        if not receiver.poll(duration + 60):
            proc.kill()
            raise RuntimeError("python load worker did not report in time")
        responses, ok, non_2xx, empty, errors, raw, started, finished, cursors = receiver.recv()
        proc.join()
        total.responses += responses
        total.ok += ok
        total.non_2xx += non_2xx
        total.empty += empty
        total.socket_errors += errors
        total.started = min(total.started, started)
        total.finished = max(total.finished, finished)
        total.cursors |= cursors
        part = array("d")
        part.frombytes(raw)
        latencies.extend(part)
    ordered = sorted(latencies)
    return LoadResult(
        scenario=scenario.name, generator=f"python×{processes}", concurrency=concurrency,
        duration_s=max(0.0, total.finished - total.started), responses=total.responses, ok=total.ok,
        non_2xx=total.non_2xx, empty_pages=total.empty, socket_errors=total.socket_errors,
        p50_ms=percentile_ms(ordered, 0.50), p90_ms=percentile_ms(ordered, 0.90),
        p99_ms=percentile_ms(ordered, 0.99), max_ms=percentile_ms(ordered, 1.0),
        distinct_pages=len(total.cursors),
        quantiles_ms=[percentile_ms(ordered, (i + 0.5) / 1000) for i in range(1000)] if ordered else [])
