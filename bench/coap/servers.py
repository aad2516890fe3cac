"""Reference servers as subprocesses: start N on one port, wait until they answer, stop, collect.

A server process announces itself with one ``READY {json}`` line on stdout and, when it gets
SIGINT or SIGTERM, prints ``STATS {json}`` (requests served, CPU, memory) and exits; both
sides of that handshake live here.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from protocols.coap import message


# -- inside a server process -------------------------------------------------------------


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


async def serve_until_signalled(port: int, stats: Callable[[], dict]) -> None:
    """Announce readiness, wait for SIGINT/SIGTERM, then report ``stats()`` plus resource use."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print("READY " + json.dumps({"pid": os.getpid(), "port": port}), flush=True)
    await stop.wait()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "pid": os.getpid(),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "cpu_sys_s": round(usage.ru_stime, 3),
        "rss_kib": rss_kib(),
        "max_rss_kib": usage.ru_maxrss,
        **stats(),
    }
    print("STATS " + json.dumps(report), flush=True)


def reuseport_socket(host: str, port: int, receive_buffer: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, receive_buffer)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


# -- in the benchmark process ------------------------------------------------------------


def coap_ping(target: tuple[str, int], timeout: float = 0.5) -> bool:
    """Send a CoAP ping (empty CON) and report whether the RST came back."""
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        mid = int.from_bytes(os.urandom(2), "big")
        try:
            sock.connect(target)
            sock.send(message.encode(message.CON, message.EMPTY, mid))
            reply = sock.recv(64)
        except OSError:  # timeout, or ICMP port unreachable
            return False
    try:
        mtype, code, reply_mid, _ = message.decode_header(reply)
    except message.MessageFormatError:
        return False
    return mtype == message.RST and reply_mid == mid


class ServerGroup:
    """``processes`` copies of ``argv`` sharing one port; a context manager.

    ``stop()`` (also on exit) returns each process's STATS dict, in start order.
    """

    def __init__(self, argv: list[str], processes: int, target: tuple[str, int],
                 ready_timeout: float = 15.0, env: dict | None = None, ping: bool = True):
        self.argv = argv
        self.processes = processes
        self.target = target
        self.ping = ping  # False: READY is enough (a DTLS-only server answers no plain ping)
        self.ready_timeout = ready_timeout
        self.env = env
        self.children: list[subprocess.Popen] = []
        self.ready: list[dict] = []
        self.stats: list[dict] | None = None

    def __enter__(self) -> ServerGroup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        for _ in range(self.processes):
            self.children.append(subprocess.Popen(
                [sys.executable, *self.argv], stdout=subprocess.PIPE, text=True, env=self.env,
            ))
        deadline = time.monotonic() + self.ready_timeout
        for child in self.children:
            line = _read_tagged_line(child, "READY", deadline)
            if line is None:
                raise RuntimeError(f"server {child.pid} did not get ready (exit {child.poll()})")
            self.ready.append(line)
        while self.ping and not coap_ping(self.target):
            if time.monotonic() > deadline:
                raise RuntimeError(f"servers on {self.target} do not answer CoAP ping")

    def stop(self, timeout: float = 10.0) -> list[dict]:
        if self.stats is not None:
            return self.stats
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        self.stats = []
        for child in self.children:
            line = _read_tagged_line(child, "STATS", deadline)
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            child.stdout.close()
            self.stats.append(line or {"pid": child.pid, "exit": child.returncode})
        return self.stats


def _read_tagged_line(child: subprocess.Popen, tag: str, deadline: float) -> dict | None:
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                return None
            line = child.stdout.readline()
            if not line:
                return None
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
    return None


def run_with_servers(
    argv: list[str], processes: int, target: tuple[str, int], load_options: dict
):
    """Start the server group, run the load generator against it, stop it, and return the
    :class:`~bench.coap.results.LoadResult` with each server's STATS in ``servers``."""
    from bench.coap.loadgen import run_load

    with ServerGroup(argv, processes, target) as group:
        result = run_load(target, **load_options)
    result.servers = group.stats
    return result
