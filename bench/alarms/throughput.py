"""Ingest with every alarm rule on against the same run with rules off (target: >= 90 %).

    python -m bench.alarms throughput [--devices 1000] [--duration 10] [--rounds 2] [--sink noop]

The load is the ingest benchmark's (bench/ingest: 1000 devices, one CON Send of 10 SenML CBOR
points outstanding each, 2 Fleet listener processes on one UDP port, embedded PostgreSQL with
fsync on). Each round runs it twice a few seconds apart, against listeners without rules and
against listeners whose writer hands every committed batch to the RuleEvaluator (the order
alternates between rounds, so neither side always gets the warmer machine). The pack carries
battery level (/3/0/9), temperature and fill level, paths the rules read, so the evaluator
queues, loads context and judges at the full ingest rate. `--sink noop` drops the findings;
`--sink alarms` hands them to fleet.alarms.service.AlarmService as `fleet serve` does.
Every acknowledged pack's rows are counted afterwards on both sides, as bench/ingest does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.coap.loadgen import default_endpoint_name, loopback_target
from bench.coap.senml import SenmlPack
from bench.ingest.database import checkpoint, embedded_server, prepare, verify
from bench.ingest.report import Side
from bench.ingest.run import MANY_REQUESTS, ROUND_SPACING_S, _machine, _sampled_side, free_udp_port


def _line(round_number: int, side: Side) -> str:
    load = side.load
    rules = [s.get("rules") for s in side.servers if s.get("rules")]
    judged = sum(r["judged_points"] for r in rules)
    findings = sum(r["findings"] for r in rules)
    dropped = sum(r["dropped"] for r in rules)
    per = ", ".join(f"{k} {v}" for k, v in side.cpu_per_request_us().items()) or "-"
    extra = f"  rules: {judged:,} points judged, {findings:,} findings, {dropped:,} dropped" if rules else ""
    return (f"{round_number:<6}{side.name:<12}{load.requests_per_s:>8,.0f}{load.points_per_s:>10,.0f}"
            f"{load.latency_p50_ms:>8.0f}{load.latency_p99_ms:>8.0f}   CPU µs/request: {per}{extra}")


def run(args: argparse.Namespace) -> dict:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    machine = _machine()
    port = args.port or free_udp_port()
    target = loopback_target(("127.0.0.1", port))
    endpoints = [default_endpoint_name(i) for i in range(args.devices)]
    rounds = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-alarms-") as work:
        with embedded_server(Path(work)) as dsn:
            prepared = asyncio.run(prepare(dsn, endpoints))
            env = {**os.environ, "FLEET_DATABASE_URL": dsn}
            first_base = int(time.time())
            slot = 0
            for number in range(1, args.rounds + 1):
                order = ("off", args.sink) if number % 2 else (args.sink, "off")
                sides = {}
                for mode in order:
                    pack = SenmlPack(points=args.points, base_time=first_base + slot * ROUND_SPACING_S)
                    slot += 1
                    argv = ["-m", "bench.ingest.listener", "--port", str(port), "--rules", mode]
                    load_options = dict(
                        clients=args.devices, requests=MANY_REQUESTS, duration=args.duration, window=1,
                        processes=1, points=args.points, format="cbor", payload=pack, register=True,
                        endpoint_name=default_endpoint_name, record_acks=True, register_timeout=60.0)
                    name = "rules off" if mode == "off" else f"rules {mode}"
                    side = _sampled_side(name, argv, args.processes, target, load_options,
                                         {"postgres": [prepared.postmaster_pid]}, env)
                    verification = asyncio.run(verify(
                        dsn, prepared.device_ids, default_endpoint_name, side.load.acked_requests or [],
                        args.points, pack.base_time, ROUND_SPACING_S))
                    side.load.acked_requests = None
                    asyncio.run(checkpoint(dsn))
                    sides[mode] = (side, verification)
                rounds.append((number, sides))
    return {"rounds": rounds, "machine": machine, "started": started}


def report(args: argparse.Namespace, found: dict) -> tuple[list[str], bool]:
    out = [f"bench/alarms throughput {found['started']}: "
           f"{args.devices} devices, {args.points}-point CBOR packs, {args.processes} listener processes, "
           f"{args.rounds} round(s) of {args.duration:g} s per side, sink {args.sink}", "",
           f"{'round':<6}{'side':<12}{'req/s':>8}{'points/s':>10}{'p50 ms':>8}{'p99 ms':>8}"]
    ratios, ok = [], True
    for number, sides in found["rounds"]:
        for mode, (side, verification) in sides.items():
            out.append(_line(number, side))
            out.append(f"      verification: {verification.line()}")
            ok = ok and verification.ok
        on, off = sides[args.sink][0].load.requests_per_s, sides["off"][0].load.requests_per_s
        if off:
            ratios.append(on / off)
    if ratios:
        out.append("")
        out.append(f"rules on / rules off, requests/s: {statistics.median(ratios):.1%} "
                   f"(median of rounds: {', '.join(f'{r:.0%}' for r in ratios)}; target >= 90 %)")
        # Steadier than rates on a shared machine: what each request cost the listeners.
        for group in ("servers", "postgres"):
            cost = {mode: statistics.median(s[mode][0].cpu_per_request_us().get(group, 0)
                                            for _, s in found["rounds"]) for mode in ("off", args.sink)}
            if cost["off"]:
                out.append(f"CPU µs per request, {group}: rules off {cost['off']:.0f}, rules on "
                           f"{cost[args.sink]:.0f} ({cost[args.sink] / cost['off']:.0%})")
    out.append("machine: " + ", ".join(f"{k}={v}" for k, v in found["machine"].items()))
    return out, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.alarms throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of Send load per side")
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2, help="listener processes on the one port")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sink", choices=("noop", "alarms"), default="noop",
                        help="where findings go: nowhere, or AlarmService.apply")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from fleet.logging import configure_logging
    from fleet.settings import LogSettings
    configure_logging(LogSettings(level="WARNING"))
    found = run(args)
    lines, ok = report(args, found)
    if args.json:
        print(json.dumps({"lines": lines, "ok": ok}))
    else:
        print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
