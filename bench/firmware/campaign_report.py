"""The firmware campaign bench's figures: what is sampled while the campaign runs (Fleet's RSS
and CPU, PostgreSQL's, the devices' counters, the whole machine's) and the printed summary."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field

POLL_S = 1.0  # the campaign is polled (and sampled) this often

@dataclass
class Sample:
    t: float  # seconds since the campaign's start
    rss_kib: int
    downloading: int
    succeeded: int
    failed: int
    fw_blocks: int  # devices' counter, cumulative
    sim_t: float  # when the devices' process took that count (its STATS line), seconds since the start
    sim_cpu_s: float
    fleet_cpu_s: float
    postgres_cpu_s: float
    machine_busy_s: float  # all processes' CPU since boot (/proc/stat), to tell the others' share


@dataclass
class Report:
    started: str
    options: dict
    machine: dict
    settle_s: float = 0.0
    fleet_idle_rss_kib: int = 0
    all_done_s: float | None = None
    status: str = ""
    counts: dict = field(default_factory=dict)
    waves: list = field(default_factory=list)
    failures: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)  # p50/p90 per device state, and of the engine's commands
    samples: list[Sample] = field(default_factory=list)
    baseline: dict = field(default_factory=dict)
    baseline_server: dict = field(default_factory=dict)



def cpu_s(pid: int, *, children: bool = False) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s(postmaster: int) -> float:
    """The server's CPU: the postmaster's, its live backends' and its ended children's."""
    total = cpu_s(postmaster, children=True)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_busy_s() -> float:
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")



def _window_rate(samples: list[Sample], seconds: float) -> tuple[float, Sample | None]:
    """The highest block rate over any `seconds` of the campaign, and where it ended."""
    best, at = 0.0, None
    for i, end in enumerate(samples):
        starts = [s for s in samples[:i] if end.sim_t - s.sim_t >= seconds]
        if starts:
            start = starts[-1]
            rate = (end.fw_blocks - start.fw_blocks) / max(end.sim_t - start.sim_t, 1e-3)
            if rate > best:
                best, at = rate, end
    return best, at


def summary(report: Report) -> list[str]:
    s = report.samples
    lines = [f"firmware campaign: {report.options['devices']} streetlights, {report.options['size']} bytes, "
             f"waves {report.options.get('waves')}, concurrency {report.options['concurrency']}, "
             f"health period {report.options['health_period']} s; machine {report.machine}"]
    done = report.all_done_s
    lines.append(f"all {report.options['devices']} succeeded: " + (f"{done} s" if done else
                 f"NO ({report.status}: {report.counts})") + f"; failures {report.failures or 'none'}")
    lines.append("wave  devices  opened s  1st download s  last downloaded s  last succeeded s  failed")
    for w in report.waves:
        lines.append(f"{w['wave']:>4} {w['devices']:>8} {w['opened_s'] or 0:>9} {w['first_download_s'] or 0:>15}"
                     f" {w['last_downloaded_s'] or 0:>18} {w['last_succeeded_s'] or 0:>17} {w['failed']:>7}")
    if report.timing:
        lines.append("time in each state, p50/p90 s: " + ", ".join(
            f"{k} {a}/{b}" for k, (a, b) in report.timing["time in each state"].items()))
        for c in report.timing["engine's commands"]:
            lines.append(f"  {c['operation']:<15} {c['n']:>6}: created -> sent p50/p90 {c['queued_p50_s']}/"
                         f"{c['queued_p90_s']} s, sent -> answered {c['answered_p50_s']}/{c['answered_p90_s']} s")
    if s:
        blocks = s[-1].fw_blocks
        moving = [x for x in s if x.downloading]
        span = (moving[-1].t - moving[0].t + POLL_S) if moving else 0
        peak, at = _window_rate(s, 10.0)
        base = report.baseline.get("blocks_per_s") or 0
        lines.append(f"blocks: {blocks} in the campaign; {blocks / s[-1].t:,.0f}/s over the whole campaign, "
                     f"{blocks / span if span else 0:,.0f}/s over the {span:.0f} s devices were downloading, "
                     f"best 10 s {peak:,.0f}/s (at {at.t if at else '?'} s, {at.downloading if at else '?'} "
                     "downloading)")
        lines.append(f"baseline (bare aiocoap, same devices, {report.baseline.get('concurrency')} at once): "
                     f"{json.dumps(report.baseline)}")
        if base:
            lines.append(f"ratio Fleet / baseline blocks/s: best 10 s {peak / base:.0%}, "
                         f"while downloading {blocks / span / base if span else 0:.0%}")
        rss = max(x.rss_kib for x in s)
        by_load = {}
        for x in s:
            bucket = (x.downloading // 250) * 250
            by_load[bucket] = max(by_load.get(bucket, 0), x.rss_kib)
        lines.append(f"Fleet RSS: idle {report.fleet_idle_rss_kib // 1024} MiB before the start, peak {rss // 1024} MiB, "
                     f"at the end {s[-1].rss_kib // 1024} MiB; peak by devices downloading at once: "
                     + ", ".join(f"{k}-{k + 249}: {v // 1024} MiB" for k, v in sorted(by_load.items())))
        lines.append(f"baseline server RSS: {report.baseline_server}")
        span_s = s[-1].t - s[0].t
        shares = {"Fleet": s[-1].fleet_cpu_s - s[0].fleet_cpu_s, "PostgreSQL": s[-1].postgres_cpu_s - s[0].postgres_cpu_s,
                  "simulated devices": s[-1].sim_cpu_s - s[0].sim_cpu_s}
        shares["everything else on the machine"] = s[-1].machine_busy_s - s[0].machine_busy_s - sum(shares.values())
        lines.append(f"CPU during the campaign ({span_s:.0f} s), in cores: "
                     + ", ".join(f"{k} {v / span_s:.2f}" for k, v in shares.items()))
    return lines
