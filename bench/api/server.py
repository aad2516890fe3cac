"""The Fleet HTTP server in processes of its own, built the way `fleet serve` builds it.

Each process opens its own pool, builds `api.app.create_app` and serves it with the same uvicorn
settings as `api.runtime.run_http`; N processes share one port through SO_REUSEPORT so the
kernel spreads connections. Logging is configured from FLEET_LOG_* like the CLI does, so the
one-line-per-request log is part of what is measured (stderr goes to a file).

    python -m bench.api.server --dsn postgresql://... --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

import httpx


def listening_socket(host: str, port: int) -> socket.socket:
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and with Nagle on, uvicorn's two writes per response (head, then body) stall
    # ~40 ms on the client's delayed ACK. (uvicorn binding host/port itself gets this right.)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def serve(dsn: str, host: str, port: int) -> None:
    import uvicorn

    from api.app import create_app
    from fleet.db import Database
    from fleet.settings import load_settings

    settings = load_settings()
    db = await Database.connect(dsn, min_size=settings.database.pool_min, max_size=settings.database.pool_max)
    try:
        app = create_app(db, settings.http, firmware=settings.firmware, security=settings.security)
        # The same uvicorn settings as api.runtime.run_http.
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", server_header=False)
        await uvicorn.Server(config).serve(sockets=[listening_socket(host, port)])
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    from fleet.logging import configure_logging
    from fleet.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m bench.api.server")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    configure_logging(load_settings().log)
    import api.app  # noqa: F401 - loaded before tune_gc freezes what exists
    from api.runtime import tune_gc
    tune_gc()  # as `fleet serve` does
    asyncio.run(serve(args.dsn, args.host, args.port))
    return 0


# -- in the benchmark process ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_processes(dsn: str, count: int, log_dir: Path, *, env: dict[str, str] | None = None,
                     startup_timeout: float = 30.0) -> Iterator[tuple[str, list[int]]]:
    """Start `count` server processes on one port; yield (base URL, pids); stop them after."""
    port = free_port()
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for n in range(count):
            log = open(log_dir / f"server-{n}.log", "ab")  # noqa: SIM115 - closed below
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.api.server", "--dsn", dsn, "--port", str(port)],
                stdout=log, stderr=log, env={**os.environ, **(env or {})}))
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, procs, startup_timeout, log_dir)
        yield base, [p.pid for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


def _listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1:port, from /proc/net/tcp (state 0A is LISTEN)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        return sum(1 for line in table if line.split()[1:2] == [wanted] and line.split()[3] == "0A")


def _wait_ready(base: str, procs: list[subprocess.Popen], timeout: float, log_dir: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"server process exited with {dead[0].returncode}; see {log_dir}/server-*.log")
        # With SO_REUSEPORT one answer proves one process; count the listening sockets too.
        if _listeners(int(base.rsplit(":", 1)[1])) >= len(procs):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready within {timeout:.0f} s; see {log_dir}/server-*.log")


if __name__ == "__main__":
    sys.exit(main())
