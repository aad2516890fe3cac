"""Line up the medians of several `python -m bench.ingest --json` reports, one line each.

    python -m bench.ingest.compare before.json after.json [...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def _median(rounds: list[dict], side: str, *keys: str) -> float | None:
    values = []
    for entry in rounds:
        value = entry.get(side)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def summary(path: Path) -> str:
    report = json.loads(path.read_text())
    rounds = report["rounds"]

    def fmt(value, spec=",.0f"):
        return "-" if value is None else format(value, spec)

    fleet_rps = _median(rounds, "fleet", "load", "requests_per_s")
    base_rps = _median(rounds, "baseline", "load", "requests_per_s")
    ratios = [r["ratio"] for r in rounds if r.get("ratio")]
    ok = all(r["verification"]["ok"] for r in rounds)
    return (f"{path.stem:<28} fleet {fmt(fleet_rps):>6} req/s "
            f"{fmt(_median(rounds, 'fleet', 'load', 'points_per_s')):>7} pts/s "
            f"p50 {fmt(_median(rounds, 'fleet', 'load', 'latency_p50_ms'))} "
            f"p99 {fmt(_median(rounds, 'fleet', 'load', 'latency_p99_ms'))} ms | "
            f"CPU µs/req listener {fmt(_median(rounds, 'fleet', 'cpu_per_request_us', 'servers'))} "
            f"pg {fmt(_median(rounds, 'fleet', 'cpu_per_request_us', 'postgres'))} | "
            f"bare {fmt(base_rps):>6} req/s "
            f"({fmt(_median(rounds, 'baseline', 'cpu_per_request_us', 'servers'))} µs/req) | "
            f"ratio {fmt(statistics.median(ratios) if ratios else None, '.0%')} "
            f"[{', '.join(format(r, '.0%') for r in ratios)}] | other cores "
            f"{fmt(_median(rounds, 'fleet', 'cpu', 'cores', 'other'), '.2f')}/"
            f"{fmt(_median(rounds, 'baseline', 'cpu', 'cores', 'other'), '.2f')} | "
            f"{'verified' if ok else 'VERIFICATION FAILED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest.compare", description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    for path in parser.parse_args(argv).reports:
        print(summary(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
