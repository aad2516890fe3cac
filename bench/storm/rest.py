"""The storm's REST load in a process of its own: GET requests at a fixed rate, open loop.

    FLEET_BENCH_KEY=... python -m bench.storm.rest --url 'http://127.0.0.1:8000/api/v1/devices?limit=50' \
        --rate 50 --out rest.json

A request is due every 1/rate seconds whether or not the earlier ones were answered (a control
room does not wait for the API to recover), on a keep-alive connection from a small pool, and
its latency counts from when it was due: time spent queued, here or in the server, shows. On
SIGTERM it stops, counts what is still unanswered as taking until then, and writes every
request's (due, latency s, status) to --out: due in CLOCK_MONOTONIC seconds, which the
benchmark shares, so it cuts the record into its phases. Status 0: no answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

from bench.processes import stop
from bench.serve import REPO, child_env

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
STOP_GRACE_S = 2.0  # what is still unanswered then is recorded as unanswered


class RestLoad:
    def __init__(self, url: str, key: str, rate: float, connections: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: keep-alive\r\n"
                        f"Authorization: Bearer {key}\r\n\r\n").encode()
        self.rate = rate
        self.gate = asyncio.Semaphore(connections)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.records: list[tuple[float, float, int]] = []
        self.pending: dict[asyncio.Task, float] = {}

    async def _connection(self) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], bool]:
        """(connection, reused): the most recently used idle one the server has not closed
        (uvicorn closes a connection idle for 5 s), else a new one."""
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return (reader, writer), True
            writer.close()
        return await asyncio.open_connection(self.host, self.port), False

    async def _exchange(self) -> int:
        (reader, writer), reused = await self._connection()
        while True:
            try:
                writer.write(self.request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = _CONTENT_LENGTH.search(head)
                if length is None:
                    raise ConnectionError("response without Content-Length")
                await reader.readexactly(int(length.group(1)))
            except (OSError, asyncio.IncompleteReadError) as exc:
                writer.close()
                # A kept-alive connection the server closed as the request left: any HTTP
                # client tries once more on a new one. Anything else is the answer.
                if not reused or isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                reused = False
                reader, writer = await asyncio.open_connection(self.host, self.port)
                continue
            except BaseException:
                writer.close()
                raise
            self.idle.append((reader, writer))
            return int(head[9:12])

    async def _one(self, due: float) -> None:
        async with self.gate:
            try:
                status = await self._exchange()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
                status = 0
        self.records.append((due, time.monotonic() - due, status))

    async def run(self, stop: asyncio.Event) -> None:
        start = time.monotonic()
        sent = 0
        while not stop.is_set():
            due = start + sent / self.rate
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due - time.monotonic()):
                    await stop.wait()
            if stop.is_set():
                break
            task = asyncio.create_task(self._one(due))
            self.pending[task] = due
            task.add_done_callback(self.pending.pop)
            sent += 1
        if self.pending:
            await asyncio.wait(list(self.pending), timeout=STOP_GRACE_S)
        now = time.monotonic()
        for task, due in list(self.pending.items()):
            task.cancel()
            self.records.append((due, now - due, 0))


async def main_async(args: argparse.Namespace, key: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    load = RestLoad(args.url, key, args.rate, args.connections)
    await load.run(stop)
    with open(args.out, "w") as out:
        json.dump({"records": sorted(load.records)}, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm.rest", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections at most")
    parser.add_argument("--out", required=True, help="where the records go at the end (JSON)")
    args = parser.parse_args(argv)
    key = os.environ.get("FLEET_BENCH_KEY", "")  # not an argument: every user sees those (ps)
    uvloop.run(main_async(args, key))
    return 0


# -- in the benchmark process ------------------------------------------------------------------


@contextlib.contextmanager
def rest_load(url: str, key: str, rate: float, out: Path) -> Iterator[subprocess.Popen]:
    """This load in its own process until the block ends; its records are in `out` then."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.storm.rest", "--url", url,
         "--rate", str(rate), "--out", str(out)], cwd=REPO, env=child_env(FLEET_BENCH_KEY=key))
    try:
        yield process
    finally:
        stop(process)


if __name__ == "__main__":
    sys.exit(main())
