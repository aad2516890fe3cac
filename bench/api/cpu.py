"""Where the CPU went during a run: server processes, PostgreSQL, the load generator, and others.

Everything shares two cores, so a rate means little without knowing who was busy; "other" is
whatever else ran on the machine meanwhile (another benchmark, say), and a run can wait for the
machine to be quiet before it starts.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

# The /proc readers are shared with bench/ingest; this module adds the API run's grouping.
from bench.ingest.cpu import TICKS, _stat, children_of, machine_jiffies, process_cpu_s  # noqa: E402,F401


def parent_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


@dataclass
class CpuSnapshot:
    at: float
    machine: tuple[int, int]
    server: dict[int, float]
    postgres: dict[int, float]
    generator: float


class CpuMeter:
    """Snapshots before and after a run; `parts()` gives CPU seconds per part in between."""

    def __init__(self, server_pids: list[int], postmaster_pid: int | None) -> None:
        self.server_pids = server_pids
        self.postmaster_pid = postmaster_pid

    def snapshot(self) -> CpuSnapshot:
        postgres: dict[int, float] = {}
        if self.postmaster_pid:
            for pid in [self.postmaster_pid, *children_of(self.postmaster_pid)]:
                postgres[pid] = process_cpu_s(pid)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return CpuSnapshot(time.monotonic(), machine_jiffies(),
                           {pid: process_cpu_s(pid) for pid in self.server_pids}, postgres,
                           children.ru_utime + children.ru_stime)

    @staticmethod
    def parts(before: CpuSnapshot, after: CpuSnapshot) -> tuple[dict[str, float], float]:
        """CPU seconds of server, postgres, generator and other, and the wall time ("window");
        and the machine's busy share in %."""
        server = sum(after.server[p] - before.server.get(p, 0.0) for p in after.server)
        # A backend that started during the run counts from zero; one that ended is lost (rare).
        postgres = sum(v - before.postgres.get(p, 0.0) for p, v in after.postgres.items())
        generator = after.generator - before.generator
        busy = (after.machine[0] - before.machine[0]) / TICKS
        total = (after.machine[1] - before.machine[1]) / TICKS
        other = max(0.0, busy - server - postgres - generator)
        parts = {"server": round(server, 3), "postgres": round(postgres, 3),
                 "generator": round(generator, 3), "other": round(other, 3),
                 "window": round(after.at - before.at, 3)}
        return parts, (100.0 * busy / total if total else 0.0)


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores the machine kept busy over the next `seconds`."""
    before = machine_jiffies()
    time.sleep(seconds)
    after = machine_jiffies()
    total = after[1] - before[1]
    return (os.cpu_count() or 1) * (after[0] - before[0]) / total if total else 0.0


def wait_for_quiet(threshold_cores: float, max_wait: float) -> float:
    """Wait until others keep less than `threshold_cores` busy, at most `max_wait` s; returns the last reading."""
    deadline = time.monotonic() + max_wait
    reading = busy_cores()
    while reading > threshold_cores and time.monotonic() < deadline:
        reading = busy_cores()
    return reading
