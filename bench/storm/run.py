"""A registration storm against `fleet serve` while the control room lists devices at a fixed rate.

    python -m bench.storm [--devices 10000] [--register-rate 2000] [--coap-workers N] [--http-workers N]
                          [--rest-rate 50] [--no-baseline] [--json]

A power cut ends: every streetlight of a city registers at once (offered at --register-rate)
while a REST client lists devices (GET /api/v1/devices?limit=50) at a fixed rate, open loop,
latency counted from when each request was due. Fleet runs as the operator runs it, `fleet
serve` in a process of its own (worker flags passed through) on a throw-away embedded PostgreSQL
tuned as `fleet serve` tunes its own (fsync on). The lights are `simulators` in a few load
processes (bench/storm/devices.py), each on its own UDP socket: they answer the /3/0 read that
follows each Register and report by Send as soon as they are registered. Phases: warm-up, REST
alone (p50/p99 before), the storm until every light is online (registered since it began) and
read (its /3/0 recorded: devices.firmware_version), both from PostgreSQL, or --cap seconds.

The same run is made with one worker of each kind (`--coap-workers 1 --http-workers 1`), the
baseline, each configuration on a city of its own in the same database; the last line is the
configuration asked for: `... p99 during storm X ms, online in Y s ...`. CPU is reported per
group (Fleet, PostgreSQL, the simulated devices, the REST load, this process, other) so the
load generators' share of the two cores is in plain sight.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import tempfile
import time
from pathlib import Path

from bench.dimming.city import embedded_server
from bench.ingest.cpu import CpuSampler, process_tree, wait_for_quiet, with_descendants
from bench.ingest.database import migrate_and_analyze
from bench.serve import fleet_serve, has_worker_flags, node_connections, workers
from bench.storm.city import StormCity, prepare, progress
from bench.storm.devices import Lights
from bench.storm.report import REST_PATH, SEND_SETTLE_S, Side, final_line, latency, side_lines, table, verdict
from bench.storm.rest import rest_load
from fleet.db import Database

BASELINE = ["--coap-workers", "1", "--http-workers", "1"]
DEVICES_PER_PROCESS = 5_000  # load processes: enough to keep each simulator's loop responsive
POLL_S = 0.5


def _say(text: str) -> None:
    print(text, flush=True)


async def storm(args: argparse.Namespace, db: Database, dsn: str, postmaster: int, city: StormCity,
                label: str, flags: list[str], work: Path) -> Side:
    me = os.getpid()
    with fleet_serve(dsn, flags, work / f"{city.slug}-fleet.log") as fleet:
        node = fleet.process
        running = workers(fleet)
        if running and not {"--coap-workers", "--http-workers"} <= set(flags):  # what the defaults came to
            label += " (" + ", ".join(f"{n} {kind}" for kind, n in sorted(running.items())) + " workers)"
        lights = Lights(city, fleet.coap_port, args.register_rate, args.max_registering, work)
        try:
            await lights.start()
            rest_out = work / f"{city.slug}-rest.json"

            def groups() -> dict[str, list[int]]:
                tree = process_tree()
                return {"fleet": with_descendants(tree, [node.pid]), "postgres": with_descendants(tree, [postmaster]),
                        "devices": [p.pid for p in lights.processes], "rest load": [rest.pid], "bench": [me]}

            with rest_load(fleet.base_url + REST_PATH, city.key, args.rest_rate, rest_out) as rest, \
                    CpuSampler(groups, every_s=0.5) as sampler:
                await asyncio.sleep(args.warmup)
                before_start = time.monotonic()
                await asyncio.sleep(args.before)
                async with db.pool.acquire() as conn:
                    storm_start = await conn.fetchval("select clock_timestamp()")
                storm_began = time.monotonic()
                lights.go()
                _say(f"  storm: {city.devices} lights register at {args.register_rate:g}/s")
                state = await _until_online(args, db, city, storm_start, storm_began)
                storm_ended = time.monotonic()
                counters = await lights.sends_settled(SEND_SETTLE_S)
            records = json.loads(rest_out.read_text())["records"]
        finally:
            await lights.stop()
    complete = state["online"] >= city.devices and state["read"] >= city.devices
    return Side(label, flags, city.devices, latency(records, before_start, storm_began),
                latency(records, storm_began, storm_ended), state["online"], state["read"],
                _seconds(state["online_s"]) if complete else None, _seconds(state["read_s"]) if complete else None,
                round(storm_ended - storm_began, 1), counters,
                _cores(sampler.share(before_start, storm_began)), _cores(sampler.share(storm_began, storm_ended)))


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _cores(share) -> dict | None:
    return None if share is None else share.cores


async def _until_online(args: argparse.Namespace, db: Database, city: StormCity, storm_start,
                        began: float) -> dict:
    last_said = began
    while True:
        state = await progress(db, city, storm_start)
        now = time.monotonic()
        if (state["online"] >= city.devices and state["read"] >= city.devices) or now - began > args.cap:
            return state
        if now - last_said >= 5:
            last_said = now
            _say(f"  {now - began:5.0f} s: {state['online']} online, {state['read']} read")
        await asyncio.sleep(POLL_S)


def _label(flags: list[str]) -> str:
    return "fleet serve " + " ".join(flags) if flags else "fleet serve"


async def run(args: argparse.Namespace) -> dict:
    asked = [*(["--coap-workers", str(args.coap_workers)] if args.coap_workers is not None else []),
             *(["--http-workers", str(args.http_workers)] if args.http_workers is not None else [])]
    configurations = [asked]
    notes: list[str] = []
    if not args.no_baseline:
        if not has_worker_flags():
            notes.append("baseline skipped: this fleet serve has no --coap-workers/--http-workers (one process)")
        elif asked != BASELINE:
            configurations.insert(0, BASELINE)
    processes = args.device_processes or max(1, math.ceil(args.devices / DEVICES_PER_PROCESS))
    sides: list[Side] = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-storm-") as work_dir:
        work = Path(work_dir)
        # Each worker of the node has its pools: as many connections as `fleet serve` gives its own server.
        with embedded_server(work, node_connections()) as dsn:
            await migrate_and_analyze(dsn)
            postmaster = int((work / "pg" / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])
            db = await Database.connect(dsn, min_size=1, max_size=2)
            try:
                cities = [await prepare(db, f"storm{n + 1}", args.devices, processes, work)
                          for n in range(len(configurations))]
                await migrate_and_analyze(dsn)  # ANALYZE after the bulk insert, as an import would be followed
                for city, flags in zip(cities, configurations, strict=True):
                    if args.wait_quiet:
                        waited, busy = wait_for_quiet(args.quiet_cores, args.wait_quiet)
                        notes.append(f"{_label(flags)}: waited {waited:g} s for a quiet machine ({busy:g} cores busy)")
                    label = _label(flags) + (" (baseline)" if flags == BASELINE and flags != asked else "")
                    _say(f"{label}: {args.devices} lights in {processes} load process(es), REST at "
                         f"{args.rest_rate:g}/s, {args.warmup:g} s warm-up, {args.before:g} s before the storm")
                    sides.append(await storm(args, db, dsn, postmaster, city, label, flags, work))
                    for line in side_lines(sides[-1]):
                        _say(line)
            finally:
                await db.close()
                if args.logs:
                    _keep_logs(work, Path(args.logs))
    return {"sides": sides, "notes": notes, "processes": processes}


def _keep_logs(work: Path, to: Path) -> None:
    """Fleet's and the lights' logs, and every REST request's record, outlive the temporary directory."""
    to.mkdir(parents=True, exist_ok=True)
    for kept in [*work.glob("*.log"), *work.glob("*-rest.json")]:
        shutil.copy(kept, to / kept.name)


def _machine() -> dict:
    load1, load5, _ = os.getloadavg()
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
            "loadavg_before": f"{load1:.2f}/{load5:.2f}"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000, help="simulated streetlights, one socket each")
    parser.add_argument("--register-rate", type=float, default=2_000.0, help="registrations offered per second")
    parser.add_argument("--max-registering", type=int, default=0,
                        help="first registrations in flight at most, over all lights (default 0: no limit, "
                             "as lights coming back after a power cut know nothing of each other)")
    parser.add_argument("--coap-workers", type=int, default=None, help="passed to fleet serve (default: its own)")
    parser.add_argument("--http-workers", type=int, default=None, help="passed to fleet serve (default: its own)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the same run with --coap-workers 1 --http-workers 1")
    parser.add_argument("--rest-rate", type=float, default=50.0, help="REST list requests per second")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of REST load not measured")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of REST load measured before the storm")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds the storm may last at most")
    parser.add_argument("--device-processes", type=int, default=0,
                        help=f"load processes for the lights (default: one per {DEVICES_PER_PROCESS})")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="before each configuration, wait up to S seconds for the machine to quiet down")
    parser.add_argument("--quiet-cores", type=float, default=0.3,
                        help="what counts as quiet: cores busy with other work (default 0.3)")
    parser.add_argument("--logs", help="a directory to keep Fleet's and the lights' logs and the REST records in")
    parser.add_argument("--json", action="store_true", help="also print the report as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.devices <= 50_000 or args.register_rate <= 0 or args.rest_rate <= 0:
        raise SystemExit("devices must be 1-50000, and the rates positive")
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    machine = _machine()
    # SIGTERM as Ctrl-C: the cleanup (lights, fleet serve, embedded PostgreSQL) runs either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from fleet.logging import configure_logging
    from fleet.settings import LogSettings
    configure_logging(LogSettings(level="WARNING", format="json"))
    _say(f"bench/storm {started}: {args.devices} lights, registrations offered at {args.register_rate:g}/s")
    report = asyncio.run(run(args))
    sides: list[Side] = report["sides"]
    _say("")
    for line in table(sides):
        _say(line)
    _say("")
    _say(verdict(sides[-1]))
    for note in report["notes"]:
        _say(note)
    _say("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()))
    if args.json:
        _say(json.dumps({"started": started, "machine": machine, "options": vars(args), "notes": report["notes"],
                         "sides": [s.to_dict() for s in sides]}, default=str))
    _say(final_line(sides[-1]))
    return 0
