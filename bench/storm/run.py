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
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.dimming.city import embedded_server
from bench.ingest.cpu import CpuSampler, process_tree, wait_for_quiet, with_descendants
from bench.ingest.database import migrate_and_analyze
from bench.processes import stop
from bench.serve import REPO, child_env, fleet_serve, has_worker_flags, workers
from bench.storm.city import StormCity, prepare, progress
from fleet.db import Database

REST_PATH = "/api/v1/devices?limit=50"
BASELINE = ["--coap-workers", "1", "--http-workers", "1"]
DEVICES_PER_PROCESS = 5_000  # load processes: enough to keep each simulator's loop responsive
POLL_S = 0.5
SEND_SETTLE_S = 10.0  # after the storm, Sends still in flight get this long to be answered
TARGET_P99_MS = 100.0
TARGET_ONLINE_S = 60.0


@dataclass
class Latency:
    requests: int
    failed: dict[str, int]  # by status: not 2xx, or "no answer"
    p50_ms: float
    p99_ms: float
    max_ms: float

    def text(self) -> str:
        failed = sum(self.failed.values())
        how = ", ".join(f"{status} {n}" for status, n in sorted(self.failed.items()))
        failed_text = f", {failed} failed: {how}" if failed else ""
        return (f"p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, max {self.max_ms:.0f} ms "
                f"({self.requests} requests{failed_text})")


def latency(records: list[list[float]], start: float, end: float) -> Latency:
    """The requests due in [start, end), however late they were answered."""
    inside = [r for r in records if start <= r[0] < end]
    ordered = sorted(r[1] for r in inside)
    failed: dict[str, int] = {}
    for _, _, status in inside:
        if not 200 <= status < 300:
            key = str(status) if status else "no answer"
            failed[key] = failed.get(key, 0) + 1

    def quantile(fraction: float) -> float:
        if not ordered:
            return math.nan
        return ordered[max(1, math.ceil(fraction * len(ordered))) - 1] * 1000

    return Latency(len(inside), failed, round(quantile(0.5), 1), round(quantile(0.99), 1), round(quantile(1.0), 1))


@dataclass
class Side:
    """One configuration of `fleet serve` through the whole storm."""

    label: str
    flags: list[str]
    devices: int
    before: Latency
    during: Latency
    online: int
    read: int
    online_s: float | None  # until the last light registered (None: not all by the cap)
    read_s: float | None  # until the last light's /3/0 was recorded
    storm_s: float  # how long the storm phase ran: until all were online and read, or the cap
    counters: dict  # the lights' own counts, summed over the load processes, Sends settled
    cpu_before: dict | None = None
    cpu_storm: dict | None = None

    @property
    def done_s(self) -> float | None:
        """Until every light was online and read."""
        if self.online_s is None or self.read_s is None:
            return None
        return max(self.online_s, self.read_s)

    @property
    def sends(self) -> dict[str, int]:
        c = self.counters
        return {"sent": c["sends"], "acked": c["sends_acked"], "refused_busy": c["sends_busy"],
                "refused_other": c["sends_failed"] - c["sends_busy"] - c["sends_lost"],
                "lost": c["sends_lost"], "unanswered": c["sends"] - c["sends_acked"] - c["sends_failed"]}

    def to_dict(self) -> dict:
        return {**asdict(self), "done_s": self.done_s, "sends": self.sends}


class Lights:
    """The load processes of one storm: started, READY, sent SIGUSR1 together, counted, stopped."""

    def __init__(self, city: StormCity, coap_port: int, args: argparse.Namespace, work: Path) -> None:
        self.city, self.coap_port, self.args, self.work = city, coap_port, args, work
        self.processes: list[asyncio.subprocess.Process] = []
        self.latest: list[dict] = []
        self._readers: list[asyncio.Task] = []

    async def start(self) -> None:
        for number, (path, lights) in enumerate(self.city.devices_files, start=1):
            share = lights / self.city.devices  # of the offered rate and of the window in flight
            window = max(1, round(self.args.max_registering * share)) if self.args.max_registering else lights
            log = (self.work / f"{self.city.slug}-devices-{number}.log").open("w")
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.storm.devices", "--server", f"coap://127.0.0.1:{self.coap_port}",
                "--devices-file", str(path), "--lights", str(lights),
                "--register-rate", str(self.args.register_rate * share), "--max-registering", str(window),
                cwd=REPO, env=child_env(), stdout=asyncio.subprocess.PIPE, stderr=log, limit=1 << 20)
            log.close()
            self.processes.append(process)
            self.latest.append({})
        async with asyncio.timeout(120):
            for process in self.processes:
                while (line := await process.stdout.readline()) != b"READY\n":
                    if not line:
                        raise RuntimeError(f"load process {process.pid} ended before READY")
        self._readers = [asyncio.create_task(self._read(n, p)) for n, p in enumerate(self.processes)]

    async def _read(self, number: int, process: asyncio.subprocess.Process) -> None:
        while line := await process.stdout.readline():
            with contextlib.suppress(ValueError):
                self.latest[number] = json.loads(line)

    def go(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGUSR1)

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for latest in self.latest:
            for name, value in latest.items():
                if name != "t":
                    total[name] = total.get(name, 0) + value
        return total

    async def sends_settled(self, timeout_s: float) -> dict[str, int]:
        """The counts once every light that registered has sent its report and every Send has
        its answer (or timed out), at most `timeout_s` from now."""
        deadline = time.monotonic() + timeout_s
        while True:
            counts = self.counters()
            sends = counts.get("sends", 0)
            if (counts.get("registered", 0) >= self.city.devices and sends >= counts["registered"]
                    and sends <= counts.get("sends_acked", 0) + counts.get("sends_failed", 0)) \
                    or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(POLL_S)

    async def stop(self) -> None:
        """SIGTERM: the lights de-register (bounded by the simulator), then the last counts."""
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                async with asyncio.timeout(30):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await reader


@contextlib.contextmanager
def rest_load(http_port: int, key: str, rate: float, out: Path):
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.storm.rest", "--url", f"http://127.0.0.1:{http_port}{REST_PATH}",
         "--rate", str(rate), "--out", str(out)], cwd=REPO, env=child_env(FLEET_BENCH_KEY=key))
    try:
        yield process
    finally:
        stop(process)


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
        lights = Lights(city, fleet.coap_port, args, work)
        try:
            await lights.start()
            rest_out = work / f"{city.slug}-rest.json"

            def groups() -> dict[str, list[int]]:
                tree = process_tree()
                return {"fleet": with_descendants(tree, [node.pid]), "postgres": with_descendants(tree, [postmaster]),
                        "devices": [p.pid for p in lights.processes], "rest load": [rest.pid], "bench": [me]}

            with rest_load(fleet.http_port, city.key, args.rest_rate, rest_out) as rest, \
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


def side_lines(side: Side) -> list[str]:
    s = side.sends
    c = side.counters
    other_failures = c.get("registration_failures", 0) - c.get("registrations_busy", 0) - c.get("registrations_lost", 0)
    done = (f"all online in {side.online_s:.1f} s, all read in {side.read_s:.1f} s" if side.done_s is not None else
            f"NOT all by the cap of {side.storm_s:.0f} s: {side.online} online, {side.read} read")
    lines = [f"{side.label}",
             f"  REST GET {REST_PATH}: before {side.before.text()}",
             f"  {'':<{len('REST GET ' + REST_PATH)}}  during {side.during.text()}",
             f"  {side.devices} lights: {done}",
             f"  Sends during the storm: {s['sent']} sent, {s['acked']} acknowledged, {s['refused_busy']} refused "
             f"5.03 with Max-Age, {s['refused_other']} refused otherwise, {s['lost']} lost, "
             f"{s['unanswered']} unanswered after {SEND_SETTLE_S:g} s",
             f"  Registers: {c.get('registrations', 0)} created, {c.get('registrations_busy', 0)} answered 5.03 with "
             f"Max-Age, {c.get('registrations_lost', 0)} timed out (no ACK, or no answer 30 s after the empty ACK), "
             f"{other_failures} failed otherwise (each tried again later); {c.get('retransmissions', 0)} "
             f"retransmissions by the lights"]
    for phase, cores in (("before", side.cpu_before), ("storm", side.cpu_storm)):
        if cores:
            lines.append(f"  CPU {phase:<6} (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in cores.items()))
    return lines


def table(sides: list[Side]) -> list[str]:
    width = max(len(side.label) for side in sides) + 2
    header = (f"{'configuration':<{width}}{'REST p50/p99 before':>21}{'p50/p99 during':>18}{'online+read s':>15}"
              f"{'Sends acked':>13}{'5.03':>6}{'other':>7}{'lost':>6}{'fleet cores':>13}{'load cores':>12}")
    rows = [header]
    for side in sides:
        s = side.sends
        storm_cpu = side.cpu_storm or {}
        load = storm_cpu.get("devices", 0) + storm_cpu.get("rest load", 0)
        done = f"{side.done_s:.1f}" if side.done_s is not None else f">{side.storm_s:.0f}"
        before = f"{side.before.p50_ms:.0f}/{side.before.p99_ms:.0f} ms"
        during = f"{side.during.p50_ms:.0f}/{side.during.p99_ms:.0f} ms"
        acked = f"{s['acked']}/{s['sent']}"
        rows.append(f"{side.label:<{width}}{before:>21}{during:>18}{done:>15}{acked:>13}"
                    f"{s['refused_busy']:>6}{s['refused_other'] + s['unanswered']:>7}"
                    f"{s['lost']:>6}{storm_cpu.get('fleet', 0):>13.2f}{load:>12.2f}")
    return rows


def verdict(side: Side) -> str:
    p99 = "met" if side.during.p99_ms <= TARGET_P99_MS else "missed"
    online = "met" if side.done_s is not None and side.done_s <= TARGET_ONLINE_S else "missed"
    s = side.sends
    refused = "met" if s["refused_other"] == 0 and s["lost"] == 0 else "missed"
    return (f"targets ({side.label}): REST p99 during the storm <= {TARGET_P99_MS:g} ms {p99}; all online and "
            f"read within {TARGET_ONLINE_S:g} s {online}; no Send refused but with 5.03 and Max-Age, none lost {refused}")


def final_line(side: Side) -> str:
    """The contract: `p99 during storm X ms` and `online in Y s`, for the configuration asked."""
    if side.done_s is not None:
        online = f"online in {side.done_s:.1f} s"
    else:
        online = f"online in {side.storm_s:.1f} s NOT reached: {side.online} online, {side.read} read at the cap"
    s = side.sends
    return (f"storm of {side.devices} devices, {side.label}: p99 during storm {side.during.p99_ms:.0f} ms "
            f"(before {side.before.p99_ms:.0f} ms), {online} (registered and read), "
            f"{s['acked']} of {s['sent']} Sends acknowledged")


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
        with embedded_server(work) as dsn:
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
