"""Ingest from start to finish: database, Fleet listeners, register, Send load, row count, baseline.

    python -m bench.ingest [--devices 1000] [--duration 10] [--points 10] [--processes 2]
                           [--format cbor] [--load-processes 1] [--security psk] [--serve] [--json]

Many simulated devices send SenML packs as fast as acknowledgements allow, first to N Fleet
listener processes sharing one UDP port (each the real `open_listener`: aiocoap udp6, the
LwM2M server, group-committed COPY into PostgreSQL), then, in the same run, to N bare aiocoap
processes answering the same requests with no work at all. A 2.04 from Fleet means the pack
is committed, so afterwards every acknowledged pack's rows are counted in `telemetry`; a
missing one fails the run. PostgreSQL runs with its default durability (fsync on).

With ``--serve`` every round also runs Fleet as an operator does, one plain `fleet serve` (its
default workers: CoAP, HTTP and the scheduler under one supervisor) on the same port, database
and devices, between the hand-started listeners and the baseline.

With ``--security psk`` every round also runs over DTLS: as many other devices, each with its
own pre-shared key, handshake with Fleet's coaps listener (counted per second), register and
Send to it, and then to a bare aiocoap DTLS server (aiocoap's tinydtls_server transport) on the
same keys; a few raw-public-key devices then count RPK handshakes per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.coap.loadgen import default_endpoint_name, loopback_target, run_load
from bench.coap.senml import SenmlPack
from bench.coap.servers import ServerGroup
from bench.ingest import baseline
from bench.ingest.cpu import CpuSampler, process_tree, wait_for_quiet, with_descendants
from bench.ingest.database import checkpoint, embedded_server, prepare, verify
from bench.ingest.report import IngestReport, Round, Side
from bench.ingest import security
from bench.serve import fleet_serve, free_port, node_connections

MANY_REQUESTS = 10**9  # the load is bounded by --duration, not by a request budget


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def _machine() -> dict:
    load1, load5, _ = os.getloadavg()
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "loadavg_before": f"{load1:.2f}/{load5:.2f}"}


def _sampled_side(name: str, argv: list[str], processes: int, target, load_options: dict,
                  extra_groups: dict[str, list[int]] | None = None,
                  env: dict | None = None, pyspy_dir: str | None = None, ping: bool = True) -> Side:
    group = ServerGroup(argv, processes, target, ready_timeout=60.0, env=env, ping=ping)
    return _measured(name, group, target, load_options, extra_groups, pyspy_dir)


def _measured(name: str, group, target, load_options: dict, extra_groups: dict[str, list[int]] | None = None,
              pyspy_dir: str | None = None) -> Side:
    """The load against `group` (a ServerGroup, or `fleet serve` shaped like one), CPU sampled."""
    me = os.getpid()

    def groups() -> dict[str, list[int]]:
        tree = process_tree()
        # With their descendants: `fleet serve`'s workers are its children.
        servers = with_descendants(tree, [child.pid for child in group.children])
        found = {"servers": servers,
                 "generator": [me] + [p for p in tree.get(me, []) if p not in servers]}
        for label, parents in (extra_groups or {}).items():
            found[label] = with_descendants(tree, parents)
        return found

    with group, CpuSampler(groups) as sampler, _py_spy(group, pyspy_dir, name):
        result = run_load(target, **load_options)
    share = sampler.share(result.load_started_at, result.load_ended_at)
    return Side(name, result, share, group.stats or [])


class ServeGroup:
    """`fleet serve` (its default workers, or `flags`) on the benchmark's port, in the shape
    of a ServerGroup: the node as an operator runs it, beside hand-started listeners."""

    def __init__(self, dsn: str, port: int, log_path: Path, flags: list[str] | None = None) -> None:
        self._serving = fleet_serve(dsn, flags or [], log_path, coap_port=port)
        self.children: list[subprocess.Popen] = []
        self.stats: list[dict] | None = None

    def __enter__(self) -> ServeGroup:
        self.children = [self._serving.__enter__().process]
        return self

    def __exit__(self, *exc_info) -> None:
        self._serving.__exit__(*exc_info)
        self.stats = [{"pid": child.pid, "exit": child.returncode} for child in self.children]


@contextlib.contextmanager
def _py_spy(group: ServerGroup, directory: str | None, name: str):
    """Sample every server process with py-spy (collapsed stacks, non-blocking) while inside."""
    if not directory:
        yield
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    spies = [subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking", "--format", "raw",
         "--rate", "250", "--pid", str(child.pid),
         "--output", str(Path(directory) / f"{name.replace(' ', '-')}.{child.pid}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for child in group.children]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(10)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


def _quiet(args: argparse.Namespace) -> tuple[float, float] | None:
    """Wait (if asked) until strangers leave the cores alone; (seconds waited, cores they used)."""
    if not args.wait_quiet:
        return None
    return wait_for_quiet(args.quiet_cores, args.wait_quiet)


ROUND_SPACING_S = 7_200  # each round's packs get their own two hours, so rounds count apart


def run_ingest(args: argparse.Namespace) -> IngestReport:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    machine = _machine()
    port = args.port or free_udp_port()
    target = loopback_target(("127.0.0.1", port))
    secure = args.security == "psk"
    coaps_port = free_udp_port() if secure else None
    coaps_target = loopback_target(("127.0.0.1", coaps_port)) if secure else None
    endpoints = [default_endpoint_name(i) for i in range(args.devices)]
    if secure:
        endpoints += [security.psk_endpoint_name(i) for i in range(args.devices)]
        endpoints += [security.rpk_endpoint_name(i) for i in range(args.rpk_devices)]
    rounds: list[Round] = []
    rpk: Side | None = None
    with tempfile.TemporaryDirectory(prefix="fleet-bench-ingest-") as work:
        # Each worker of a `fleet serve` has its pools: as many connections as it gives its own server.
        with embedded_server(Path(work), node_connections() if args.serve else None) as dsn:
            prepared = asyncio.run(prepare(dsn, endpoints, security.device_row,
                                           credentials_key=security.BENCH_CREDENTIALS_KEY if secure else None))
            argv = ["-m", "bench.ingest.listener", "--port", str(port), "--pool-max", str(args.pool_max)]
            if secure:
                argv += ["--coaps-port", str(coaps_port)]
            if args.flushers:
                argv += ["--flushers", str(args.flushers)]
            if args.rules != "off":
                argv += ["--rules", args.rules]
            if args.profile:
                Path(args.profile).mkdir(parents=True, exist_ok=True)
                argv += ["--profile", str(Path(args.profile).resolve() / "listener.prof")]
            env = {**os.environ, "FLEET_DATABASE_URL": dsn, "FLEET_CREDENTIALS_KEY": security.BENCH_CREDENTIALS_KEY}
            first_base = int(time.time())
            for number in range(1, args.rounds + 1):
                # Each side that stores gets its own two hours, so sides and rounds count apart.
                slot = (number - 1) * (1 + bool(args.serve) + secure)
                pack = SenmlPack(points=args.points, format=args.format,
                                 base_time=first_base + slot * ROUND_SPACING_S)
                load_options = dict(
                    clients=args.devices, requests=MANY_REQUESTS, duration=args.duration,
                    window=args.window, processes=args.load_processes, points=args.points,
                    format=args.format, payload=pack, register=True,
                    endpoint_name=default_endpoint_name, record_acks=True,
                    register_timeout=args.register_timeout,
                )
                serve_options = {**load_options, "payload": SenmlPack(
                    points=args.points, format=args.format, base_time=first_base + (slot + 1) * ROUND_SPACING_S)}

                def listeners() -> tuple:
                    return _stored_side(args, "fleet", argv, target, load_options, prepared, env)

                def serve(number: int = number, options: dict = serve_options) -> tuple:
                    return _stored_side(args, "fleet serve", argv, target, options, prepared, env,
                                        group=ServeGroup(dsn, port, Path(work) / f"fleet-serve-{number}.log",
                                                         args.serve_flags))

                # The side that runs second meets a larger, colder telemetry table: with --serve,
                # even rounds run `fleet serve` first so neither side always has that place.
                if args.serve and number % 2 == 0:
                    served = serve()
                    result = Round(number, *listeners())
                else:
                    result = Round(number, *listeners())
                    served = serve() if args.serve else None
                if served is not None:
                    slot += 1
                    result.serve, result.serve_verification = served
                if not args.skip_baseline:
                    quiet = _quiet(args)
                    result.baseline = _sampled_side(
                        "bare aiocoap", baseline.server_argv(port), args.processes, target,
                        {**load_options, "record_acks": False}, pyspy_dir=args.py_spy)
                    result.baseline.quiet = quiet
                if secure:
                    secure_pack = SenmlPack(points=args.points, format=args.format,
                                            base_time=first_base + (slot + 1) * ROUND_SPACING_S)
                    secure_options = {**load_options, "payload": secure_pack, "credentials": security.psk_credentials,
                                      "endpoint_name": security.psk_endpoint_name}
                    result.secure, result.secure_verification = _stored_side(
                        args, "fleet psk", argv, coaps_target, secure_options, prepared, env)
                    if not args.skip_baseline:
                        quiet = _quiet(args)
                        result.secure_baseline = _sampled_side(
                            "aiocoap psk", baseline.server_argv(coaps_port, transport="tinydtls_server"),
                            args.processes, coaps_target, {**secure_options, "record_acks": False},
                            pyspy_dir=args.py_spy, ping=False)
                        result.secure_baseline.quiet = quiet
                rounds.append(result)
            if secure and args.rpk_devices:
                rpk = _sampled_side("fleet rpk", argv, args.processes, coaps_target, dict(
                    clients=args.rpk_devices, requests=0, duration=1.0, processes=args.load_processes,
                    credentials=security.rpk_credentials(prepared.server_public_key_der),
                    endpoint_name=security.rpk_endpoint_name, handshake_timeout=120.0), env=env, ping=False)
    return IngestReport(
        started=started, command=" ".join(["python -m bench.ingest", *sys.argv[1:]]),
        options={k: v for k, v in vars(args).items() if k not in ("json",)},
        machine=machine, postgres=prepared.settings, rounds=rounds, rpk=rpk,
    )


def _stored_side(args: argparse.Namespace, name: str, argv: list[str], target, load_options: dict,
                 prepared, env: dict, group=None):
    """Fleet under load (the listeners `argv`, or `group`), then what the database holds
    against what its devices were told."""
    quiet = _quiet(args)
    # A CoAP ping needs no session; over DTLS the listeners' READY is what says they are up.
    group = group or ServerGroup(argv, args.processes, target, ready_timeout=60.0, env=env,
                                 ping=load_options.get("credentials") is None)
    side = _measured(name, group, target, load_options, {"postgres": [prepared.postmaster_pid]}, args.py_spy)
    side.quiet = quiet
    pack = load_options["payload"]
    verification = asyncio.run(verify(
        prepared.dsn, prepared.device_ids, load_options["endpoint_name"], side.load.acked_requests or [],
        args.points, pack.base_time, ROUND_SPACING_S))
    side.load.acked_requests = None  # counted; too long to keep in the report
    asyncio.run(checkpoint(prepared.dsn))
    return side, verification


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000, help="simulated devices, one socket each")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of Send load per side")
    parser.add_argument("--points", type=int, default=10, help="readings per SenML pack")
    parser.add_argument("--processes", type=int, default=2, help="server processes on the one port")
    parser.add_argument("--format", choices=("cbor", "json"), default="cbor")
    parser.add_argument("--load-processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--window", type=int, default=1, help="outstanding CONs per device")
    parser.add_argument("--port", type=int, default=0, help="UDP port (default: a free one)")
    parser.add_argument("--pool-max", type=int, default=10, help="PostgreSQL pool size per listener")
    parser.add_argument("--flushers", type=int, help="TelemetryWriter flushers per listener (experiment)")
    parser.add_argument("--register-timeout", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat fleet-then-baseline; medians are reported (default 1)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="before each side, wait up to S seconds for the machine to quiet down")
    parser.add_argument("--quiet-cores", type=float, default=0.3,
                        help="what counts as quiet: cores busy with other work (default 0.3)")
    parser.add_argument("--skip-baseline", action="store_true", help="measure Fleet only")
    parser.add_argument("--serve", action="store_true",
                        help="each round also runs Fleet as one plain `fleet serve` (its default workers), "
                             "beside the --processes hand-started listeners")
    parser.add_argument("--rules", choices=("off", "alarms"), default="off",
                        help="the listeners' alarm rules: off (telemetry alone), or alarms (what a `fleet coap` "
                             "and each coap worker of `fleet serve` run: the like-for-like comparison with --serve)")
    parser.add_argument("--serve-flags", type=shlex.split, default=[], metavar="FLAGS",
                        help="with --serve: flags for fleet serve, e.g. '--coap-workers 2 --http-workers 1'")
    parser.add_argument("--security", choices=("nosec", "psk"), default="nosec",
                        help="psk: each round also over DTLS with a key per device, beside aiocoap's DTLS server")
    parser.add_argument("--rpk-devices", type=int, default=20,
                        help="with --security psk: raw-public-key devices that only count handshakes (0: none)")
    parser.add_argument("--profile", help="directory for a cProfile of each listener process")
    parser.add_argument("--py-spy", help="directory for py-spy collapsed stacks of every server process")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.devices <= 20_000 or not 1 <= args.processes <= 8 or not 1 <= args.rounds <= 20:
        raise SystemExit("devices must be 1-20000, processes 1-8 and rounds 1-20")
    logging.basicConfig(level=logging.WARNING)
    from fleet.logging import configure_logging
    from fleet.settings import LogSettings
    configure_logging(LogSettings(level="WARNING"))
    begin = time.monotonic()
    report = run_ingest(args)
    report.notes.append(f"wall time {time.monotonic() - begin:.0f} s")
    if args.json:
        print(json.dumps(report.to_dict(), default=str))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1
