"""What one scenario run measured, and the table printed beside the same-run baseline."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LoadResult:
    """Counts are of responses; the rate counts 200s only, over the generator's own wall time."""

    scenario: str
    generator: str
    concurrency: int
    duration_s: float
    responses: int
    ok: int
    non_2xx: int
    empty_pages: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    distinct_pages: int = 0
    # Evenly spaced latency quantiles (200 or 1000), for merging runs; not part of the report.
    quantiles_ms: list[float] = field(default_factory=list, repr=False)
    # Filled by the runner: CPU seconds per part over the run, and the machine's busy share.
    cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy_percent: float = math.nan
    notes: list[str] = field(default_factory=list)

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    def cpu_ms_per_request(self, part: str) -> float:
        return 1000 * self.cpu_s.get(part, math.nan) / self.ok if self.ok else math.nan

    def as_dict(self, baseline_per_s: float) -> dict[str, Any]:
        out = asdict(self)
        del out["quantiles_ms"]
        out["req_per_s"] = round(self.ok_per_s, 1)
        out["ratio_to_baseline"] = round(self.ok_per_s / baseline_per_s, 4) if baseline_per_s else None
        out["cpu_ms_per_request"] = {part: round(self.cpu_ms_per_request(part), 3) for part in self.cpu_s
                                     if part != "window"}
        return out


def percentile_ms(sorted_seconds: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted latencies in seconds, in milliseconds."""
    if not sorted_seconds:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_seconds)))
    return sorted_seconds[rank - 1] * 1000


def merge(parts: list[LoadResult]) -> LoadResult:
    """One result from slices of the same scenario (interleaved rounds): counts, time and CPU add
    up; percentiles come from the slices' quantiles, each weighted by its response count."""
    if len(parts) == 1:
        return parts[0]
    weighted = sorted((q, p.responses / len(p.quantiles_ms)) for p in parts for q in p.quantiles_ms)
    total = sum(w for _, w in weighted)

    def percentile(fraction: float) -> float:
        running = 0.0
        for value, weight in weighted:
            running += weight
            if running >= fraction * total:
                return value
        return weighted[-1][0] if weighted else math.nan

    cpu: dict[str, float] = {}
    for p in parts:
        for key, value in p.cpu_s.items():
            cpu[key] = round(cpu.get(key, 0.0) + value, 3)
    first = parts[0]
    return LoadResult(
        scenario=first.scenario, generator=first.generator, concurrency=first.concurrency,
        duration_s=sum(p.duration_s for p in parts), responses=sum(p.responses for p in parts),
        ok=sum(p.ok for p in parts), non_2xx=sum(p.non_2xx for p in parts),
        empty_pages=sum(p.empty_pages for p in parts), socket_errors=sum(p.socket_errors for p in parts),
        p50_ms=percentile(0.50), p90_ms=percentile(0.90), p99_ms=percentile(0.99),
        max_ms=max(p.max_ms for p in parts), distinct_pages=max(p.distinct_pages for p in parts),
        cpu_s=cpu, machine_busy_percent=sum(p.machine_busy_percent for p in parts) / len(parts),
        notes=[n for p in parts for n in p.notes],
        quantiles_ms=[q for q, _ in weighted][::len(parts)])


def baseline_rates(results: list[LoadResult]) -> dict[str, float]:
    """Per generator, the mean rate of its baseline runs (one before the lists, one after)."""
    runs: dict[str, list[float]] = {}
    for r in results:
        if r.scenario.startswith("baseline"):
            runs.setdefault(r.generator, []).append(r.ok_per_s)
    return {generator: sum(rates) / len(rates) for generator, rates in runs.items()}


def table(results: list[LoadResult], *, markdown: bool = False) -> str:
    """One row per scenario; the ratio is to the mean baseline rate of the same generator."""
    rates = baseline_rates(results)
    header = ["scenario", "gen", "req/s", "p50 ms", "p99 ms", "× baseline", "non-2xx", "empty",
              "server CPU ms/req", "pg CPU ms/req", "gen CPU ms/req", "others' cores"]
    rows = []
    for r in results:
        base = rates.get(r.generator)
        ratio = r.ok_per_s / base if base else math.nan
        rows.append([r.scenario, r.generator, f"{r.ok_per_s:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
                     f"{ratio:.3f}", str(r.non_2xx), str(r.empty_pages),
                     f"{r.cpu_ms_per_request('server'):.3f}", f"{r.cpu_ms_per_request('postgres'):.3f}",
                     f"{r.cpu_ms_per_request('generator'):.3f}",
                     f"{r.cpu_s['other'] / r.cpu_s['window']:.2f}" if r.cpu_s.get("window") else "-"])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *(fmt(row) for row in rows)])
