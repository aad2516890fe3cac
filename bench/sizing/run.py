"""What one device costs a node and the database: the figures behind docs/scaling.md's sizing.

    python -m bench.sizing [--devices 10000] [--steps 2] [--lifetime 120] [--points 500000] [--security psk]
                           [--json out.json]

A throw-away embedded PostgreSQL (as `fleet serve` tunes it, fsync on) with N streetlights, one
real `fleet coap` process (the one-process device edge: listener, dispatcher, telemetry writer)
and simulated streetlights (bench.sizing.devices, each device its own UDP socket, answering the
server's reads). Phases, each measured from /proc (CPU of the listener and of PostgreSQL: the
postmaster, its live children and the children that exited):

1. idle: the listener's RSS with nobody registered;
2. register, in --steps equal parts: every part registers at once (--register-rate), the
   listener reads /3/0 of each device and records it; the phase ends when every device of the
   part is registered and read and the listener is quiet. CPU per Register (with its
   follow-ups), RSS per registered device, the listener's database connections;
3. update: each device sends Update at 80-90 % of --lifetime; CPU per Update;
4. deregister: the simulators stop (De-register); CPU per De-register, RSS afterwards;
5. telemetry: --points points written through the listener's TelemetryWriter (10-point packs,
   today's partition): bytes on disk per point (table + index), WAL per point, PostgreSQL
   CPU per point; bytes per registration, device and device_state row.

With --security psk every device holds a PSK (bench.ingest's) and registers over coaps, so the
listener keeps a DTLS session per device.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.dimming.city import embedded_server, prepare
from bench.ingest.cpu import TICKS, _stat, children_of, machine_jiffies, process_cpu_s
from bench.ingest.database import migrate_and_analyze
from fleet.db import Database

PATHS = [f"/3311/0/{r}" for r in (5850, 5851, 5805, 5820, 5821)] + [f"/3/0/{r}" for r in (7, 8, 9, 10, 20)]
QUIET_CORES = 0.03  # the listener at rest: its sweeps and heartbeats


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def postgres_cpu_s(postmaster: int) -> float:
    """The postmaster, its live backends and workers, and those that exited (cutime, cstime)."""
    fields = _stat(postmaster)
    own = (sum(int(f) for f in fields[11:15]) / TICKS) if fields else 0.0
    return own + sum(process_cpu_s(pid) for pid in children_of(postmaster))


class Meter:
    def __init__(self, listener: int, postmaster: int) -> None:
        self.listener, self.postmaster = listener, postmaster

    def read(self) -> tuple[float, float, float, float]:
        """(monotonic s, listener CPU s, PostgreSQL CPU s, the whole machine's busy CPU s)."""
        return (time.monotonic(), process_cpu_s(self.listener), postgres_cpu_s(self.postmaster),
                machine_jiffies()[0] / TICKS)

    async def wait_quiet(self, cap_s: float) -> None:
        end = time.monotonic() + cap_s
        while time.monotonic() < end:
            before = process_cpu_s(self.listener)
            await asyncio.sleep(1.0)
            if process_cpu_s(self.listener) - before < QUIET_CORES:
                return


def spent(start: tuple[float, ...], end: tuple[float, ...], count: int, idle: dict | None = None) -> dict:
    """CPU per operation over a phase; with `idle`, net of what the listener and PostgreSQL use
    at rest (sweeps, heartbeats, autovacuum) over the same wall time."""
    wall, listener, pg, machine = (b - a for a, b in zip(start, end, strict=True))
    if idle:
        listener -= idle["listener_cores"] * wall
        pg -= idle["postgres_cores"] * wall
    return {"count": count, "wall_s": round(wall, 2),
            "listener_us_per_op": round(listener / count * 1e6) if count else None,
            "postgres_us_per_op": round(pg / count * 1e6) if count else None,
            "listener_cores": round(listener / wall, 2), "postgres_cores": round(pg / wall, 2),
            "machine_cores": round(machine / wall, 2)}


async def database_work(conn: asyncpg.Connection) -> dict[str, int]:
    """Counters of the whole server: commits, rows written, WAL bytes (for deltas per phase)."""
    row = await conn.fetchrow("select sum(xact_commit) as commits, sum(tup_inserted) as inserted,"
                              " sum(tup_updated) as updated, sum(tup_deleted) as deleted,"
                              " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint as wal from pg_stat_database")
    tables = await conn.fetch("select relname, n_tup_ins + n_tup_upd + n_tup_del as written from pg_stat_user_tables")
    return {key: int(value) for key, value in row.items()} | {f"rows:{r['relname']}": r["written"] for r in tables}


async def per_op(conn: asyncpg.Connection, before: dict[str, int], count: int) -> dict:
    """What one operation of a phase cost the database: commits, rows, WAL bytes (stats lag ~0.5 s),
    and the tables it wrote most (rows inserted, updated or deleted per operation)."""
    if not count:
        return {}
    await asyncio.sleep(1.0)  # pg_stat_database is flushed by the backends at most every second
    after = await database_work(conn)
    delta = {key: (after[key] - before.get(key, 0)) / count for key in after}
    figures = {f"{key}_per_op": round(value, 2) for key, value in delta.items() if not key.startswith("rows:")}
    tables = sorted(((value, key[5:]) for key, value in delta.items() if key.startswith("rows:") and value >= 0.05),
                    reverse=True)
    return figures | {"rows_per_op_by_table": {name: round(value, 2) for value, name in tables[:10]}}


async def connections(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("select usename, count(*) from pg_stat_activity where backend_type = 'client backend'"
                            " and pid <> pg_backend_pid() group by usename")
    return {r["usename"]: r["count"] for r in rows}


async def device_phases(args, dsn: str, postmaster: int, lights: Path, work: Path) -> dict:
    rows = list(csv.reader(lights.open()))
    header, rows = rows[0], rows[1:]
    per_step = len(rows) // args.steps
    port = free_port()
    env = {**os.environ, "FLEET_DATABASE_URL": dsn, "FLEET_LOG_LEVEL": "WARNING", "FLEET_LOG_FORMAT": "json"}
    coaps_port, secure = 0, []
    if args.security == "psk":
        from bench.ingest.security import BENCH_CREDENTIALS_KEY

        # The simulators all come from one address: the per-source handshake share is off.
        env |= {"FLEET_CREDENTIALS_KEY": BENCH_CREDENTIALS_KEY, "FLEET_COAPS_SOURCE_SHARE": "1"}
        coaps_port = free_port()
        secure = ["--security", "psk", "--credentials-file", str(work / "credentials.json"),
                  "--secure-server", f"coaps://127.0.0.1:{coaps_port}"]
    log = (work / "listener.log").open("w")
    listener = subprocess.Popen([sys.executable, "-c", "import sys; from api.cli import main; sys.exit(main())",
                                 "coap", "--coap-port", str(port), "--coaps-port", str(coaps_port),
                                 "--metrics-port", "0"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    simulators: list[subprocess.Popen] = []
    conn = await asyncpg.connect(dsn)
    meter = Meter(listener.pid, postmaster)
    out: dict = {"listener_pid": listener.pid}
    try:
        await asyncio.sleep(3)
        await meter.wait_quiet(30)
        start = meter.read()
        await asyncio.sleep(10)
        idle = spent(start, meter.read(), 0)
        out["idle"] = idle | {"rss_kib": rss_kib(listener.pid), "connections": await connections(conn)}
        print("idle:", out["idle"], flush=True)
        out["register"] = []
        first_registered = None
        for step in range(args.steps):
            part = work / f"part-{step}.csv"
            with part.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(rows[step * per_step:(step + 1) * per_step])
            total = (step + 1) * per_step
            start, work_before = meter.read(), await database_work(conn)
            first_registered = first_registered or time.monotonic()
            simulators.append(subprocess.Popen(
                [sys.executable, "-m", "bench.sizing.devices", "--server", f"coap://127.0.0.1:{port}",
                 "--devices-file", str(part), "--lights", str(per_step), "--lifetime", str(args.lifetime),
                 "--register-rate", str(args.register_rate), *secure],
                stdout=(work / f"sim-{step}.log").open("w"), stderr=subprocess.STDOUT))
            deadline = time.monotonic() + args.lifetime * 0.7
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                registered = await conn.fetchval("select count(*) from registrations")
                read = await conn.fetchval("select count(distinct device_id) from telemetry where path like '/3/0/%'")
                if registered >= total and read >= total:
                    break
            await meter.wait_quiet(10)
            end = meter.read()
            figures = spent(start, end, per_step, idle)
            over_coaps = await conn.fetchval("select count(*) from registrations where secure")
            figures.update(registered=registered, read=read, over_coaps=over_coaps, rss_kib=rss_kib(listener.pid),
                           connections=await connections(conn), **await per_op(conn, work_before, per_step))
            out["register"].append(figures)
            print(f"register step {step + 1}:", figures, flush=True)
        # Updates: each device's first one is due 80-90 % of the lifetime after its Register.
        await asyncio.sleep(max(0.0, first_registered + args.lifetime * 0.78 - time.monotonic()))
        window_start_db = await conn.fetchval("select now()")
        start, work_before = meter.read(), await database_work(conn)
        deadline = time.monotonic() + args.lifetime * 0.5
        updated = 0
        while time.monotonic() < deadline and updated < len(simulators) * per_step:
            await asyncio.sleep(1.0)
            updated = await conn.fetchval("select count(*) from registrations where updated_at >= $1",
                                          window_start_db)
        await meter.wait_quiet(5)
        end = meter.read()
        updated = await conn.fetchval("select count(*) from registrations where updated_at >= $1", window_start_db)
        out["update"] = (spent(start, end, updated, idle) | {"rss_kib": rss_kib(listener.pid)}
                         | await per_op(conn, work_before, updated))
        print("update:", out["update"], flush=True)
        out["sizes_registered"] = await relation_sizes(conn)
        registered = await conn.fetchval("select count(*) from registrations")
        start, work_before = meter.read(), await database_work(conn)
        for sim in simulators:
            sim.send_signal(signal.SIGINT)
        for sim in simulators:
            await asyncio.to_thread(sim.wait, 60)
        await meter.wait_quiet(10)
        end = meter.read()
        gone = registered - await conn.fetchval("select count(*) from registrations")
        out["deregister"] = (spent(start, end, gone, idle) | {"rss_kib": rss_kib(listener.pid)}
                             | await per_op(conn, work_before, gone))
        print("deregister:", out["deregister"], flush=True)
        out["listener_fds"] = len(os.listdir(f"/proc/{listener.pid}/fd"))
        out["simulators"] = [(work / f"sim-{step}.log").read_text().strip().splitlines()[-3:]
                             for step in range(len(simulators))]
    finally:
        for sim in simulators:
            if sim.poll() is None:
                sim.kill()
        listener.send_signal(signal.SIGTERM)
        await asyncio.to_thread(listener.wait, 30)
        await conn.close()
    return out


async def relation_sizes(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Bytes (heap + indexes + toast) and rows of the tables a device fills."""
    sizes = {}
    for table in ("devices", "registrations", "device_state", "telemetry"):
        if table == "telemetry":
            total, indexes = await conn.fetchrow(
                "select coalesce(sum(pg_total_relation_size(inhrelid)), 0), coalesce(sum(pg_indexes_size(inhrelid)), 0)"
                " from pg_inherits where inhparent = 'telemetry'::regclass")
        else:
            total, indexes = await conn.fetchrow("select pg_total_relation_size($1::regclass),"
                                                 " pg_indexes_size($1::regclass)", table)
        sizes[table] = {"bytes": total, "index_bytes": indexes,
                        "rows": await conn.fetchval(f"select count(*) from {table}")}  # noqa: S608
    return sizes


async def telemetry_phase(args, dsn: str, postmaster: int) -> dict:
    from fleet.telemetry.service import TelemetryMaintenance, TelemetryWriter

    db = await Database.connect(dsn, min_size=2, max_size=4)
    try:
        await TelemetryMaintenance(db).run()
        admin = await asyncpg.connect(dsn)  # the owner: CHECKPOINT, sizes, WAL positions
        devices = [(r["tenant_id"], r["id"]) for r in await admin.fetch("select tenant_id, id from devices")]
        await admin.execute("checkpoint")
        before_sizes = await relation_sizes(admin)
        lsn = await admin.fetchval("select pg_current_wal_lsn()")
        writer = TelemetryWriter(db)
        now = datetime.now(UTC)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        span_s = max(60.0, (now - midnight).total_seconds() - 60)
        rng = random.Random(1)
        packs = args.points // len(PATHS)
        start_cpu = (time.monotonic(), process_cpu_s(os.getpid()), postgres_cpu_s(postmaster),
                     machine_jiffies()[0] / TICKS)
        waiting: list[asyncio.Future[None]] = []
        for n in range(packs):
            tenant, device = devices[n % len(devices)]
            at = midnight + timedelta(seconds=rng.uniform(0, span_s))
            waiting.append(writer.submit([(tenant, device, at, path, rng.uniform(0, 250), None, None)
                                          for path in PATHS]))
            if len(waiting) >= 2_000:  # what a busy listener has queued: about two commits' worth
                await asyncio.gather(*waiting)
                waiting.clear()
        await asyncio.gather(*waiting)
        end_cpu = (time.monotonic(), process_cpu_s(os.getpid()), postgres_cpu_s(postmaster),
                   machine_jiffies()[0] / TICKS)
        await writer.close()
        wal = await admin.fetchval("select pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", lsn)
        await admin.execute("analyze telemetry")
        after_sizes = await relation_sizes(admin)
        await admin.close()
        points = packs * len(PATHS)
        grown = after_sizes["telemetry"]["bytes"] - before_sizes["telemetry"]["bytes"]
        index_grown = after_sizes["telemetry"]["index_bytes"] - before_sizes["telemetry"]["index_bytes"]
        figures = spent(start_cpu, end_cpu, points)
        return {"points": points, "packs": packs, "batches": writer.batches,
                "bytes_per_point": round(grown / points, 1),
                "index_bytes_per_point": round(index_grown / points, 1), "wal_bytes_per_point": round(int(wal) / points, 1),
                "writer_us_per_point": figures["listener_us_per_op"],
                "postgres_us_per_point": figures["postgres_us_per_op"], "wall_s": figures["wall_s"],
                "machine_cores": figures["machine_cores"],
                "sizes": after_sizes}
    finally:
        await db.close()


async def psk_city(dsn: str, count: int, work: Path) -> dict[str, str]:
    """Streetlights holding a PSK each (bench.ingest's), their devices file and credentials file."""
    from bench.dimming.city import FILE_COLUMNS
    from bench.ingest import database
    from bench.ingest.security import BENCH_CREDENTIALS_KEY, bench_psk, device_row, psk_endpoint_name

    endpoints = [psk_endpoint_name(n) for n in range(count)]
    prepared = await database.prepare(dsn, endpoints, row=device_row, credentials_key=BENCH_CREDENTIALS_KEY)
    with (work / "lights.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FILE_COLUMNS)
        for n, name in enumerate(endpoints):
            row = device_row(n, name)
            writer.writerow(["streetlight", name, "provisioned", row["lat"], row["lon"], "Jung-gu", f"PSK{n:08d}",
                             "Lumen Korea", "LK-120", 120, "led"])
    devices = {name: {"mode": "psk", "identity": name, "key_hex": bench_psk(name.encode()).hex()} for name in endpoints}
    (work / "credentials.json").write_text(json.dumps({"devices": devices}))
    return prepared.settings


async def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="fleet-sizing-") as tmp:
        work = Path(tmp)
        with embedded_server(work) as dsn:
            await migrate_and_analyze(dsn)
            postmaster = int((work / "pg" / "pgdata" / "postmaster.pid").read_text().split()[0])
            if args.security == "psk":
                settings = await psk_city(dsn, args.devices, work)
            else:
                db = await Database.connect(dsn, min_size=1, max_size=2)
                try:
                    settings = (await prepare(db, dsn, args.devices, work / "lights.csv")).settings
                finally:
                    await db.close()
            conn = await asyncpg.connect(dsn)
            try:
                report: dict = {"devices": args.devices, "security": args.security, "settings": settings,
                                "max_connections": await conn.fetchval("show max_connections")}
            finally:
                await conn.close()
            if not args.telemetry_only:
                report |= await device_phases(args, dsn, postmaster, work / "lights.csv", work)
            report["telemetry"] = await telemetry_phase(args, dsn, postmaster)
            print("telemetry:", {k: v for k, v in report["telemetry"].items() if k != "sizes"}, flush=True)
            print("telemetry sizes:", report["telemetry"]["sizes"], flush=True)
            return report


def summary(report: dict) -> str:
    if "idle" not in report:
        return json.dumps({k: v for k, v in report["telemetry"].items() if k != "sizes"}, default=str)
    idle = report["idle"]["rss_kib"]
    lines = [f"listener RSS idle {idle / 1024:.1f} MiB; at rest listener {report['idle']['listener_cores']} cores, "
             f"PostgreSQL {report['idle']['postgres_cores']} cores"]
    done = 0
    for step in report["register"]:
        done += step["count"]
        lines.append(f"registered {done}: RSS {step['rss_kib'] / 1024:.1f} MiB "
                     f"({(step['rss_kib'] - idle) * 1024 / done:.0f} B per device); Register+follow-ups "
                     f"listener {step['listener_us_per_op']} us, PostgreSQL {step['postgres_us_per_op']} us; "
                     f"connections {step['connections']}")
    for name in ("update", "deregister"):
        phase = report[name]
        lines.append(f"{name} ({phase['count']}): listener {phase['listener_us_per_op']} us, "
                     f"PostgreSQL {phase['postgres_us_per_op']} us per op; RSS after {phase['rss_kib'] / 1024:.1f} MiB")
    sizes = report["sizes_registered"]
    for table in ("devices", "registrations"):
        lines.append(f"{table}: {sizes[table]['bytes'] / max(1, sizes[table]['rows']):.0f} B per row "
                     f"({sizes[table]['rows']} rows)")
    tele = report["telemetry"]
    state = tele["sizes"]["device_state"]
    lines.append(f"telemetry: {tele['bytes_per_point']} B on disk and {tele['wal_bytes_per_point']} B of WAL per "
                 f"point; PostgreSQL {tele['postgres_us_per_point']} us, writer {tele['writer_us_per_point']} us "
                 f"per point ({tele['points']} points, {tele['batches']} commits); device_state "
                 f"{state['bytes'] / max(1, state['rows']):.0f} B per row")
    lines.append(f"listener fds {report['listener_fds']}; max_connections {report['max_connections']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sizing", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=2, help="register the devices in this many equal parts")
    parser.add_argument("--lifetime", type=int, default=120, help="registration lifetime of the devices, s")
    parser.add_argument("--register-rate", type=float, default=1000.0, help="Registers offered per second")
    parser.add_argument("--points", type=int, default=500_000, help="telemetry points for the disk figures")
    parser.add_argument("--security", choices=("nosec", "psk"), default="nosec",
                        help="psk: the devices register over coaps, a PSK each (DTLS sessions in the listener)")
    parser.add_argument("--telemetry-only", action="store_true", help="only the telemetry phase (no listener)")
    parser.add_argument("--json", help="also write the whole report here")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    print(summary(report))
    return 0
