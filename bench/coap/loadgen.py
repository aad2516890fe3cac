"""LwM2M device-fleet load generator on raw asyncio UDP: register, then Send as fast as ACKs allow.

Each simulated client owns a connected UDP socket (so SO_REUSEPORT servers spread them) and
keeps ``window`` CON ``POST /dp`` requests outstanding. Clients are spread over worker
processes that start their load phase together and report back for aggregation.

    python -m bench.coap.loadgen --target 127.0.0.1:5683 --clients 200 --duration 10 \\
        --requests 100000 --points 10 --format cbor --processes 2 [--register] [--window 1]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import multiprocessing
import resource
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from bench.coap.endpoint import Timing
from bench.coap.results import LoadResult, WorkerReport, aggregate
from bench.coap.senml import SENML_FORMATS, SenmlPack
from bench.coap.worker import LoadWorker


def default_endpoint_name(client_index: int) -> str:
    return f"bench-{client_index:06d}"


@dataclass
class LoadConfig:
    """One load run; every field but ``target`` has a default.

    - ``target``: loopback only, ``"127.0.0.1:5683"``, ``"[::1]:5683"`` or ``(host, port)``.
    - ``clients`` sockets (client indices ``first_client …``), spread over ``processes``
      forked workers; each keeps ``window`` CON requests outstanding.
    - The load stops after ``requests`` Send requests in total or ``duration`` seconds,
      whichever comes first, then waits up to ``drain`` seconds for outstanding answers.
    - ``payload(client_index, seq) -> bytes`` defaults to :class:`SenmlPack` of ``points``
      readings in ``format`` ("cbor" → content-format 112, "json" → 110); with a custom
      payload give ``content_format`` and, for ``points_acked``, a ``points`` attribute on it
      or the ``points`` field.
    - ``register`` first POSTs /rd as ``endpoint_name(client_index)`` with ``lifetime``;
      clients whose registration fails sit the load out. ``deregister`` DELETEs afterwards.
    - ``record_acks`` keeps every acknowledged (client_index, seq) pair in the result.
    - ``timing``: RFC 7252 ACK_TIMEOUT, ACK_RANDOM_FACTOR, MAX_RETRANSMIT.
    - ``credentials(client_index)``: DTLS credentials (protocols.coap.dtls PskCredentials or
      RpkCredentials) to speak coaps; every client's handshake runs first, together, and the
      result reports how many finished per second.

    A client's message ids wrap after 65 536 requests; if that happens within
    EXCHANGE_LIFETIME (247 s) the server may answer from its duplicate cache, which the
    result counts as ``mid_reuse_within_lifetime``: use more clients then.
    """

    target: tuple[str, int]
    clients: int = 200
    requests: int = 100_000
    duration: float = 10.0
    window: int = 1
    processes: int = 1
    points: int = 10
    format: str = "cbor"
    payload: Callable[[int, int], bytes] | None = None
    content_format: int | None = None
    path: str = "/dp"
    register: bool = False
    endpoint_name: Callable[[int], str] = default_endpoint_name
    lifetime: int = 3600
    deregister: bool = False
    first_client: int = 0
    timing: Timing = field(default_factory=Timing)
    drain: float = 3.0
    register_timeout: float = 30.0
    register_concurrency: int = 64
    record_acks: bool = False
    credentials: Callable[[int], object] | None = None
    handshake_timeout: float = 60.0
    socket_buffer: int = 1 << 20
    loop: str = "auto"  # "uvloop", "asyncio", or "auto": uvloop when installed (~3x cheaper)

    def __post_init__(self) -> None:
        self.target = loopback_target(self.target)
        if self.format not in SENML_FORMATS:
            raise ValueError(f"format must be one of {sorted(SENML_FORMATS)}")
        if self.payload is None:
            self.payload = SenmlPack(points=self.points, format=self.format)
        if self.content_format is None:
            self.content_format = SENML_FORMATS[self.format]
        if self.clients < 1 or self.window < 1 or self.processes < 1:
            raise ValueError("clients, window and processes must be at least 1")
        if self.requests < 0 or not 0 < self.duration <= 3600:
            raise ValueError("requests must be >= 0 and duration in (0, 3600] s")
        self.processes = min(self.processes, self.clients)
        if self.loop not in ("auto", "uvloop", "asyncio"):
            raise ValueError("loop must be auto, uvloop or asyncio")


def loopback_target(target: str | tuple[str, int]) -> tuple[str, int]:
    """Parse 'host:port' or '[v6]:port' and refuse anything that is not loopback."""
    if isinstance(target, str):
        host, _, port = target.rpartition(":")
        target = (host.strip("[]"), int(port))
    host, port = target
    address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0]
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
        raise ValueError(f"load may only target loopback addresses, not {host}")
    return address, int(port)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed + 64), hard))


def _run_worker(config: LoadConfig, indices: range, budget: int, barrier) -> WorkerReport:
    _raise_fd_limit(len(indices))
    worker = LoadWorker(config, indices, budget)
    if config.loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if config.loop == "uvloop":
                raise
        else:
            return uvloop.run(worker.run(barrier))
    return asyncio.run(worker.run(barrier))


def _worker_process(connection, config, indices, budget, barrier) -> None:
    try:
        connection.send(("ok", _run_worker(config, indices, budget, barrier)))
    except BaseException:
        connection.send(("error", traceback.format_exc()))
        if barrier is not None:
            barrier.abort()
    finally:
        connection.close()


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_config(config: LoadConfig) -> LoadResult:
    """Run one load and aggregate; blocks. Worker processes are forked, so hooks need not pickle."""
    client_counts = _split(config.clients, config.processes)
    budgets = [config.requests * count // config.clients for count in client_counts]
    budgets[0] += config.requests - sum(budgets)
    ranges, first = [], config.first_client
    for count in client_counts:
        ranges.append(range(first, first + count))
        first += count

    if config.processes == 1:
        reports = [_run_worker(config, ranges[0], budgets[0], None)]
    else:
        reports = _run_processes(config, ranges, budgets)
    host, port = config.target
    return aggregate(
        reports,
        target=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        window=config.window,
        points_per_request=getattr(config.payload, "points", config.points),
    )


def _run_processes(config: LoadConfig, ranges: list[range], budgets: list[int]) -> list[WorkerReport]:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(ranges))
    workers = []
    for indices, budget in zip(ranges, budgets):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker_process, args=(sender, config, indices, budget, barrier), daemon=True
        )
        process.start()
        sender.close()
        workers.append((process, receiver))
    give_up = time.monotonic() + config.register_timeout * 2 + config.duration + config.drain + 60
    reports, errors = [], []
    try:
        for process, receiver in workers:
            if not receiver.poll(max(0.0, give_up - time.monotonic())):
                errors.append(f"worker {process.pid} did not report in time")
                continue
            try:
                status, payload = receiver.recv()
            except EOFError:
                errors.append(f"worker {process.pid} died (exit code {process.exitcode})")
                continue
            (reports if status == "ok" else errors).append(payload)
    finally:
        for process, receiver in workers:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
            receiver.close()
    if errors:
        raise RuntimeError("load worker failed:\n" + "\n".join(errors))
    return reports


def run_load(target: str | tuple[str, int], **options) -> LoadResult:
    """Run one load against ``target`` ('127.0.0.1:5683' or a (host, port) pair); the options
    are the fields of :class:`LoadConfig`. Blocks until the run is over."""
    return run_config(LoadConfig(target=target, **options))


async def run_load_async(target: str | tuple[str, int], **options) -> LoadResult:
    """:func:`run_load` from inside an event loop, without blocking it."""
    return await asyncio.to_thread(run_load, target, **options)


# -- command line -----------------------------------------------------------------------


def add_load_arguments(parser: argparse.ArgumentParser, processes_option: str = "--processes") -> None:
    group = parser.add_argument_group("load")
    group.add_argument("--clients", type=int, default=200)
    group.add_argument("--duration", type=float, default=10.0, help="seconds of load, at most")
    group.add_argument("--requests", type=int, default=100_000, help="Send requests, at most")
    group.add_argument("--points", type=int, default=10, help="readings per Send")
    group.add_argument("--format", choices=sorted(SENML_FORMATS), default="cbor")
    group.add_argument(processes_option, type=int, default=1, dest="processes",
                       help="load generator processes")
    group.add_argument("--window", type=int, default=1, help="outstanding CONs per client")
    group.add_argument("--register", action="store_true", help="register each client first")
    group.add_argument("--deregister", action="store_true", help="deregister after the load")
    group.add_argument("--lifetime", type=int, default=3600)
    group.add_argument("--path", default="/dp")
    group.add_argument("--drain", type=float, default=3.0, help="seconds to await stragglers")
    group.add_argument("--ack-timeout", type=float, default=2.0)
    group.add_argument("--max-retransmit", type=int, default=4)
    group.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                       help="generator event loop; auto = uvloop when installed")


def load_options(args: argparse.Namespace) -> dict:
    names = {f.name for f in fields(LoadConfig)}
    options = {k: v for k, v in vars(args).items() if k in names and k != "target"}
    options["timing"] = Timing(ack_timeout=args.ack_timeout, max_retransmit=args.max_retransmit)
    return options


def print_result(result: LoadResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        print("\n".join(result.summary_lines()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coap.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="127.0.0.1:5683", help="host:port, loopback only")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    result = run_load(args.target, **load_options(args))
    print_result(result, args.json)
    return 0 if result.acked else 1


if __name__ == "__main__":
    sys.exit(main())
