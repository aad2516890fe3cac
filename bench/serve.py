"""`fleet serve` as a benchmark's child process: the node as an operator runs it, on the
benchmark's database, ready once /readyz and a CoAP ping answer, stopped by SIGTERM (it drains)."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.coap.servers import coap_ping
from bench.ingest.cpu import process_tree, with_descendants
from bench.processes import stop

REPO = Path(__file__).resolve().parents[1]


def free_port(kind: int) -> int:
    """A free TCP (SOCK_STREAM) or UDP (SOCK_DGRAM, IPv6 and IPv4) port below the ephemeral
    range: the benchmark lets it go between sides, and on a busy machine another process's
    client socket would soon take a port the kernel handed out (EADDRINUSE for the next side)."""
    family = socket.AF_INET6 if kind == socket.SOCK_DGRAM else socket.AF_INET
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        ephemeral = int(ports.read().split()[0])
    while True:
        port = random.randrange(max(1024, ephemeral - 10_000), ephemeral)
        with socket.socket(family, kind) as sock:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                sock.bind(("::" if family == socket.AF_INET6 else "127.0.0.1", port))
            except OSError:
                continue
            return port


def child_env(**extra: str) -> dict[str, str]:
    """The environment of the benchmark's children: this checkout's code whatever else is
    installed, and Fleet logging warnings only (FLEET_BENCH_LOG_LEVEL=INFO: a line per request
    too), as JSON (a rendered traceback per refused request would eat the CPU being measured)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "FLEET_LOG_LEVEL": os.environ.get("FLEET_BENCH_LOG_LEVEL", "WARNING"),
            "FLEET_LOG_FORMAT": "json", **extra}


def has_worker_flags() -> bool:
    """Whether this `fleet serve` takes --coap-workers (a supervisor of workers) or is one process."""
    done = subprocess.run([sys.executable, "-m", "api.cli", "serve", "--help"], capture_output=True, text=True,
                          cwd=REPO, env=child_env(), check=False)
    return "--coap-workers" in done.stdout


@dataclass(frozen=True, slots=True)
class Node:
    process: subprocess.Popen
    http_port: int
    coap_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@contextlib.contextmanager
def fleet_serve(dsn: str, flags: list[str], log_path: Path, *, coap_port: int = 0,
                ready_timeout_s: float = 90.0) -> Iterator[Node]:
    """`fleet serve [flags]` on `dsn` (coaps and metrics off), its output in `log_path`."""
    http_port = free_port(socket.SOCK_STREAM)
    coap_port = coap_port or free_port(socket.SOCK_DGRAM)
    argv = [sys.executable, "-m", "api.cli", "serve", "--http-port", str(http_port), "--coap-port", str(coap_port),
            "--coaps-port", "0", "--metrics-port", "0", *flags]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(argv, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=child_env(FLEET_DATABASE_URL=dsn))
        try:
            node = Node(process, http_port, coap_port)
            _wait_ready(node, log_path, ready_timeout_s)
            yield node
        finally:
            stop(process)


def workers(node: Node) -> dict[str, int]:
    """The node's worker processes by kind ({"coap": 2, "http": 1}), from their FLEET_WORKER;
    empty for a `fleet serve` of one process."""
    found: dict[str, int] = {}
    for pid in with_descendants(process_tree(), [node.process.pid]):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for entry in environ:
            if entry.startswith(b"FLEET_WORKER="):
                kind = entry.split(b"=", 1)[1].decode().rsplit("-", 1)[0]
                found[kind] = found.get(kind, 0) + 1
    return found


def _wait_ready(node: Node, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while True:
            if node.process.poll() is not None:
                raise RuntimeError(f"fleet serve exited ({node.process.returncode}):\n{tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{node.base_url}/readyz").status_code == 200 and \
                        coap_ping(("127.0.0.1", node.coap_port)):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"fleet serve not ready within {timeout_s:.0f} s:\n{tail(log_path)}")
            time.sleep(0.25)


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def node_connections() -> int:
    """`max_connections` for a bench's own PostgreSQL under a `fleet serve` of this machine's
    default workers, as `fleet serve` would give its embedded server (api.runtime)."""
    from api.node import default_workers
    from api.runtime import embedded_connections
    from fleet.settings import load_settings

    return embedded_connections(load_settings(), sum(default_workers()))
