"""Push a new dimming level to N simulated streetlights; time it until every ack is committed.

    python -m bench.dimming [--lights 10000] [--rounds 3] [--json]

This process runs Fleet as `fleet serve` does (the CoAP listener with its dispatcher, and the
lighting scheduler, which leads), on an embedded PostgreSQL with default durability (fsync on).
A second process runs the simulated streetlights (`simulators`, see bench/dimming/devices.py),
each an LwM2M client on its own UDP socket; they obey writes and then report level and power by Send,
as the real ones would, so that ingest runs during the push too. Each round times three ways
of moving every light to a new level:

- command:  one WRITE batch of /3416/0/1 to all lights (CommandService.submit, what POST
            /api/v1/commands does), from the call until every command is `succeeded` in
            PostgreSQL, i.e. the device's 2.04 is in and its recording committed;
- override: an override of the lights' district (LightingService, what POST
            /api/v1/lighting/overrides does); the scheduler leader, woken by NOTIFY, reconciles
            and commands; same stop condition, and exactly one command per light is checked;
- bare CoAP: the same PUTs as plain aiocoap requests from the listener's own context, as many
            in flight as the dispatcher allows, nothing read from or written to the database:
            the same-run baseline of what the stack we build on (aiocoap) and the devices allow.
            Fleet itself sends through its outbound fast path (protocols/coap/outbound.py).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiocoap
from aiocoap import Code, Message
from aiocoap.transports.udp6 import UDP6EndpointAddress

from api.runtime import tune_gc
from bench.ingest.database import migrate_and_analyze
from bench.ingest.listener import alarm_rules
from bench.dimming.city import DISTRICT, City, embedded_server, prepare
from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from fleet.db import Database
from fleet.lighting.service import LightingService
from fleet.objectmodel import ResourcePath
from fleet.registry.models import DeviceFilter, DeviceKind
from fleet.scheduling.leader import LeaderElection
from fleet.scheduling.lighting import LightingJobs
from protocols.coap.transport import CITY_TUNING, udp_interface
from protocols.lwm2m.downlink import DeviceAddress, DeviceRequestFailed
from protocols.lwm2m.listener import Listener, open_listener
from bench.processes import stop

TARGET_S = 5.0
PUSH_TIMEOUT_S = 150.0  # a push still unfinished then is reported with its unfinished count
BARE_TIMEOUT_S = 120.0  # past CoAP's MAX_TRANSMIT_WAIT (93 s): an exchange that never ends counts as failed
POLL_S = 0.5  # the stop condition's poll; the times come from completed_at, so finer only loads PostgreSQL
COMMAND_PATH = "/3416/0/1"
SIMULATED_START = "2026-11-24T21:00"  # evening in Seoul: the lights are lit when the run begins


@dataclass
class Push:
    round: int
    path: str
    level: int
    lights: int
    commands: int  # commands created for the push (must equal lights: none twice)
    submitted_ms: float  # until the commands were in the queue (0 for bare CoAP)
    first_sent_ms: float  # from the batch's creation until the dispatcher sent the first
    first_ack_ms: float
    all_acked_s: float  # from the push's start until its last ack was committed
    failed: int
    unfinished: int  # neither succeeded nor failed when the push timed out
    p50_ms: float
    p99_ms: float
    reported: int  # lights whose own report (Send of /3416/0/3) shows the new level

    @property
    def per_s(self) -> float:
        return self.lights / self.all_acked_s if self.all_acked_s else 0.0


async def _db_now(db: Database) -> dt.datetime:
    async with db.pool.acquire() as conn:
        return await conn.fetchval("select clock_timestamp()")


async def _wait_committed(db: Database, started_at: dt.datetime, origin: str, expected: int,
                          timeout_s: float = PUSH_TIMEOUT_S) -> list:
    """Poll until `expected` commands of `origin` created since `started_at` are final (or time out)."""
    t0 = time.perf_counter()
    while True:
        async with db.pool.acquire() as conn:
            batches = [r["id"] for r in await conn.fetch(
                "select id from command_batches where origin = $1 and created_at >= $2", origin, started_at)]
            done = await conn.fetchval(
                """select count(*) from commands where batch_id = any($1::uuid[])
                   and status in ('succeeded', 'failed', 'expired', 'cancelled')""", batches)
        if (batches and done >= expected) or time.perf_counter() - t0 > timeout_s:
            return batches
        await asyncio.sleep(POLL_S)


async def _batch_figures(db: Database, batches: list, started_at: dt.datetime) -> dict:
    """Counts and times from the database's own clock: the push began at `started_at`."""
    async with db.pool.acquire() as conn:
        return dict(await conn.fetchrow(
            """select count(*) as commands,
                      extract(epoch from max(c.completed_at) - $2) as last_ack_s,
                      count(*) filter (where c.status in ('failed', 'expired', 'cancelled')) as failed,
                      count(*) filter (where c.status in ('queued', 'sent')) as unfinished,
                      1000 * extract(epoch from min(c.sent_at) - min(b.created_at)) as first_sent_ms,
                      1000 * extract(epoch from min(c.completed_at) - min(b.created_at)) as first_ack_ms,
                      1000 * percentile_cont(0.5) within group (
                          order by extract(epoch from c.completed_at - b.created_at)) as p50_ms,
                      1000 * percentile_cont(0.99) within group (
                          order by extract(epoch from c.completed_at - b.created_at)) as p99_ms
               from commands c join command_batches b on b.id = c.batch_id
               where c.batch_id = any($1::uuid[])""", batches, started_at))


def _queued(*, number: int, path: str, level: int, city: City, submitted_ms: float,
            figures: dict, reported: int) -> Push:
    # Until the last ack committed, on PostgreSQL's clock: exact, whatever the polling interval.
    return Push(number, path, level, city.lights, figures["commands"], round(submitted_ms),
                round(figures["first_sent_ms"]), round(figures["first_ack_ms"]),
                round(float(figures["last_ack_s"]), 2), figures["failed"], figures["unfinished"],
                round(figures["p50_ms"]),
                round(figures["p99_ms"]), reported)


async def _reported(db: Database, level: int, lights: int, wait_s: float = 15.0) -> int:
    """How many lights have themselves reported the new level (their Send after the write)."""
    deadline = time.perf_counter() + wait_s
    while True:
        async with db.pool.acquire() as conn:
            count = await conn.fetchval(
                "select count(*) from device_state where path = '/3416/0/3' and v_num = $1", float(level))
        if count >= lights or time.perf_counter() > deadline:
            return count
        await asyncio.sleep(0.25)


async def push_command(db: Database, city: City, number: int, level: int) -> Push:
    started_at = await _db_now(db)
    t0 = time.perf_counter()
    await CommandService(db).submit(city.principal, CommandRequest(
        Target(filter=DeviceFilter(kind=DeviceKind.STREETLIGHT)), Operation.WRITE, COMMAND_PATH, level,
        origin="bench"))
    submitted_ms = (time.perf_counter() - t0) * 1000
    batches = await _wait_committed(db, started_at, "bench", city.lights)
    figures = await _batch_figures(db, batches, started_at)
    return _queued(number=number, path="command", level=level, city=city, submitted_ms=submitted_ms,
                   figures=figures, reported=await _reported(db, level, city.lights))


async def push_override(db: Database, city: City, number: int, level: int) -> Push:
    started_at = await _db_now(db)
    t0 = time.perf_counter()
    await LightingService(db).create_override(city.principal, {
        "scope": {"district": DISTRICT}, "dimming_level": level, "duration_s": 3600, "reason": "bench"})
    submitted_ms = (time.perf_counter() - t0) * 1000
    batches = await _wait_committed(db, started_at, "lighting", city.lights)
    figures = await _batch_figures(db, batches, started_at)
    return _queued(number=number, path="override", level=level, city=city, submitted_ms=submitted_ms,
                   figures=figures, reported=await _reported(db, level, city.lights))


async def push_bare(db: Database, listener: Listener, city: City, number: int, level: int) -> Push:
    async with db.pool.acquire() as conn:
        addresses = [DeviceAddress(r["address"], r["port"]) for r in await conn.fetch(
            "select address, port from registrations")]
    path = ResourcePath.parse(COMMAND_PATH)
    interface = udp_interface(listener.context)
    gate = asyncio.Semaphore(listener.dispatcher.concurrency)
    latencies: list[float] = []
    failed = 0
    t0 = time.perf_counter()

    async def write(address: DeviceAddress) -> None:
        nonlocal failed
        async with gate:
            request = Message(code=Code.PUT, uri_path=[str(i) for i in path.ids], payload=str(level).encode(),
                              content_format=0, transport_tuning=CITY_TUNING)
            request.remote = UDP6EndpointAddress((f"::ffff:{address.host}", address.port, 0, 0), interface)
            try:
                response = await asyncio.wait_for(listener.context.request(request).response, BARE_TIMEOUT_S)
                if not response.code.is_successful():
                    raise DeviceRequestFailed(str(response.code))
                latencies.append(time.perf_counter() - t0)
            except (DeviceRequestFailed, TimeoutError, aiocoap.error.Error):
                failed += 1

    await asyncio.gather(*(write(a) for a in addresses))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    quantile = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return Push(number, "bare CoAP", level, len(addresses), len(addresses), 0, 0, round(latencies[0] * 1000),
                round(elapsed, 2), failed, 0, round(quantile(0.5)), round(quantile(0.99)),
                await _reported(db, level, city.lights))


@contextlib.asynccontextmanager
async def simulated_lights(work: Path, port: int, count: int, devices_file: Path):
    log_path = work / "simulator.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.dimming.devices", "--lights", str(count),
             "--devices-file", str(devices_file), "--server", f"coap://127.0.0.1:{port}",
             "--start", SIMULATED_START],
            stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "FLEET_LOG_LEVEL": "WARNING"})
        try:
            yield process
        finally:
            stop(process)


async def _settle(db: Database, count: int, timeout_s: float = 600) -> float:
    """Wait for every light to register, be read (/3/0, after its Register) and report once."""
    t0 = time.perf_counter()
    while True:
        async with db.pool.acquire() as conn:
            registered = await conn.fetchval("select count(*) from registrations")
            identified = await conn.fetchval("select count(*) from devices where firmware_version is not null")
            reported = await conn.fetchval("select count(*) from device_state where path = '/3416/0/3'")
        if registered >= count and identified >= count and reported >= count:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"{registered} of {count} lights registered, {identified} read, {reported} reported")
        await asyncio.sleep(0.5)


async def _schedule_city(db: Database, city: City) -> Push:
    """A calendar for the district (always 20 %): the scheduler's first push, timed like an override."""
    lighting = LightingService(db)
    started_at = await _db_now(db)
    t0 = time.perf_counter()
    program = await lighting.create_program(city.principal, {"name": "always 20", "switch_points": [
        {"anchor": "local_time", "local_time": "12:00", "dimming_level": 20}]})
    calendar = await lighting.create_calendar(city.principal, {"name": "bench", "default_program_id": str(program.id)})
    await lighting.assign(city.principal, {"calendar_id": str(calendar.id), "district": DISTRICT})
    submitted_ms = (time.perf_counter() - t0) * 1000
    batches = await _wait_committed(db, started_at, "lighting", city.lights)
    figures = await _batch_figures(db, batches, started_at)
    return _queued(number=0, path="calendar", level=20, city=city, submitted_ms=submitted_ms,
                   figures=figures, reported=await _reported(db, 20, city.lights))


def _exchanges(listener: Listener) -> collections.Counter:
    """The outbound fast path's counters, to tell retransmissions and failures per push."""
    outbound = listener.client.outbound
    if outbound is None:
        return collections.Counter()
    counts = collections.Counter({"retransmitted": outbound.retransmitted, "empty ACKs": outbound.empty_acked})
    counts.update({f"failed: {reason}": n for reason, n in outbound.failures.items()})
    return counts


async def _alarm_counts(db: Database, rules) -> str:
    """What the rules did so far (with --rules alarms): points judged, alarms open by type."""
    async with db.system_tx() as conn:
        rows = await conn.fetch("select type, count(*) as n from alarms where status <> 'cleared' group by 1")
    open_alarms = ", ".join(f"{r['type']} {r['n']}" for r in rows) or "none"
    return f"{rules.judged_points} points judged in {rules.batches} batches, {rules.findings} findings; open: {open_alarms}"


async def run(args: argparse.Namespace) -> dict:
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
               "loadavg_before": "/".join(f"{x:.2f}" for x in os.getloadavg()[:2])}
    pushes: list[Push] = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-dimming-") as work_dir:
        work = Path(work_dir)
        with embedded_server(work) as dsn:
            await migrate_and_analyze(dsn)
            db = await Database.connect(dsn, min_size=4, max_size=args.pool_max)
            try:
                devices_file = work / "lights.csv"
                city = await prepare(db, dsn, args.lights, devices_file)
                alarms, rules = alarm_rules(db, args.rules)
                async with open_listener(db, "::", 0, alarm_service=alarms, rules=rules) as listener:
                    election = LeaderElection(db, "bench")
                    scheduler = asyncio.create_task(election.run(LightingJobs(db).lead))
                    try:
                        async with simulated_lights(work, listener.port, args.lights, devices_file):
                            settle_s = await _settle(db, args.lights)
                            print(f"{args.lights} lights registered and reported in {settle_s:.1f} s", flush=True)
                            pushes.append(await _schedule_city(db, city))
                            print(_line(pushes[-1]), flush=True)
                            for number in range(1, args.rounds + 1):
                                for push in (lambda: push_command(db, city, number, 30 + number),
                                             lambda: push_override(db, city, number, 60 + number),
                                             lambda: push_bare(db, listener, city, number, 90 + number)):
                                    await asyncio.sleep(args.pause)
                                    before = _exchanges(listener)
                                    pushes.append(await push())
                                    print(_line(pushes[-1]), flush=True)
                                    wire = _exchanges(listener) - before
                                    if wire:
                                        print(f"      fast path: {dict(wire)}", flush=True)
                                    if rules is not None:
                                        print(f"      alarm rules: {await _alarm_counts(db, rules)}", flush=True)
                    finally:
                        scheduler.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await scheduler
            finally:
                await db.close()
    return {"started": args.started, "options": {"lights": args.lights, "rounds": args.rounds},
            "machine": machine, "postgres": city.settings,
            "pushes": [asdict(p) | {"per_s": round(p.per_s)} for p in pushes]}


HEADER = (f"{'round':<6}{'path':<11}{'level':>6}{'lights':>7}{'cmds':>7}{'submit ms':>10}{'1st sent ms':>12}"
          f"{'1st ack ms':>11}"
          f"{'all acked s':>12}{'cmds/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'failed':>7}{'unfin.':>7}{'reported':>9}")


def _line(p: Push) -> str:
    return (f"{p.round:<6}{p.path:<11}{p.level:>6}{p.lights:>7}{p.commands:>7}{p.submitted_ms:>10.0f}"
            f"{p.first_sent_ms:>12.0f}{p.first_ack_ms:>11.0f}{p.all_acked_s:>12.2f}{p.per_s:>8.0f}"
            f"{p.p50_ms:>8.0f}{p.p99_ms:>8.0f}"
            f"{p.failed:>7}{p.unfinished:>7}{p.reported:>9}")


def summary(report: dict) -> list[str]:
    pushes = [Push(**{k: v for k, v in p.items() if k != "per_s"}) for p in report["pushes"]]
    lines = ["", HEADER, *(_line(p) for p in pushes), ""]
    medians = {}
    for path in ("command", "override", "bare CoAP"):
        timed = [p.all_acked_s for p in pushes if p.path == path]
        if timed:
            medians[path] = statistics.median(timed)
            lights = pushes[0].lights
            lines.append(f"median {path:<10} {medians[path]:6.2f} s until every ack is committed, "
                         f"{lights / medians[path]:7,.0f} commands/s")
    if "command" in medians and "bare CoAP" in medians:
        lines.append(f"ratio command / bare CoAP commands/s: {medians['bare CoAP'] / medians['command']:.0%}")
    fleet_pushes = [p.all_acked_s for p in pushes if p.path in ("command", "override", "calendar")]
    worst = max(fleet_pushes, default=0)
    verdict = "met" if worst <= TARGET_S else "missed"
    within = sum(1 for s in fleet_pushes if s <= TARGET_S)
    lines.append(f"target <= {TARGET_S:g} s for {report['options']['lights']} lights: {verdict} "
                 f"(slowest push {worst:.2f} s; {within} of {len(fleet_pushes)} pushes within)")
    duplicates = [p for p in pushes if p.path != "bare CoAP" and p.commands != p.lights]
    lines.append("one command per light per push: " + ("yes" if not duplicates else f"NO: {duplicates}"))
    lines.append("postgres: " + ", ".join(f"{k}={v}" for k, v in report["postgres"].items()))
    lines.append("machine: " + ", ".join(f"{k}={v}" for k, v in report["machine"].items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dimming", description=__doc__.split("\n")[0])
    parser.add_argument("--lights", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between pushes (reports drain)")
    parser.add_argument("--pool-max", type=int, default=20)
    parser.add_argument("--rules", choices=("off", "alarms"), default="off",
                        help="alarm rules on the listener: none, or `fleet serve`'s device edge")
    parser.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    args = parser.parse_args(argv)
    args.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # SIGTERM as Ctrl-C: the cleanup (simulator, embedded PostgreSQL) runs either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from fleet.logging import configure_logging
    from fleet.settings import LogSettings
    # JSON: an error storm rendered as rich tracebacks would eat the CPU being measured.
    configure_logging(LogSettings(level="WARNING", format="json"))
    logging.getLogger().setLevel(logging.WARNING)
    print(f"bench/dimming {args.started}: {args.lights} simulated streetlights, {args.rounds} round(s)", flush=True)
    print(HEADER, flush=True)
    tune_gc()  # as `fleet serve` does
    report = asyncio.run(run(args))
    for line in summary(report):
        print(line)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0
