"""Who used the two cores during a load: server processes, PostgreSQL, the generator, strangers.

A thread samples /proc every quarter second; afterwards the samples are cut to the load phase
(its start and end are CLOCK_MONOTONIC readings, which every process on the machine shares).
"Other" is whatever else the machine ran meanwhile: the ratio to the same-run baseline is the
result, and this says how much of the machine each side actually had.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores so far."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def process_cpu_s(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0


def children_of(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[1]) == parent:
                found.append(int(entry))
    return found


def process_tree() -> dict[int, list[int]]:
    """Every process's children, from one walk over /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def with_descendants(tree: dict[int, list[int]], roots: list[int]) -> list[int]:
    """`roots` and everything they started, however deep (a supervisor's workers, PostgreSQL's backends)."""
    found, waiting = [], list(roots)
    while waiting:
        pid = waiting.pop()
        found.append(pid)
        waiting += tree.get(pid, [])
    return found


@dataclass
class Sample:
    at: float
    machine: tuple[int, int]
    groups: dict[str, float]


@dataclass
class CpuShare:
    """Cores' worth of CPU (1.0 = one core fully busy) per group over a window."""

    seconds: float
    cores: dict[str, float]

    def line(self) -> str:
        return ", ".join(f"{name} {value:.2f}" for name, value in self.cores.items())


class CpuSampler:
    """``groups()`` returns {name: [pid, ...]} at each sample; pids may come and go, which is why
    a process's CPU is counted from the first sample that saw it (children that lived shorter
    than a quarter second go to "other")."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]], every_s: float = 0.25) -> None:
        self.groups = groups
        self.every_s = every_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._first_seen: dict[int, float] = {}

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        at = time.monotonic()
        totals: dict[str, float] = {}
        for name, pids in self.groups().items():
            used = 0.0
            for pid in pids:
                cpu = process_cpu_s(pid)
                base = self._first_seen.setdefault(pid, cpu)
                used += cpu - base
            totals[name] = totals.get(name, 0.0) + used
        self.samples.append(Sample(at, machine_jiffies(), totals))

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.every_s):
                self._sample()
                return

    def share(self, start: float, end: float) -> CpuShare | None:
        """CPU per group between the samples nearest to start and end (monotonic seconds)."""
        inside = [s for s in self.samples if start - self.every_s <= s.at <= end + self.every_s]
        if len(inside) < 2:
            return None
        first = min(inside, key=lambda s: abs(s.at - start))
        last = min(inside, key=lambda s: abs(s.at - end))
        seconds = last.at - first.at
        if seconds <= 0:
            return None
        cores = {name: (last.groups.get(name, 0.0) - first.groups.get(name, 0.0)) / seconds
                 for name in last.groups}
        busy = (last.machine[0] - first.machine[0]) / TICKS / seconds
        cores["other"] = max(0.0, busy - sum(cores.values()))
        cores["machine"] = busy
        return CpuShare(round(seconds, 2), {k: round(v, 3) for k, v in cores.items()})


def busy_cores(window_s: float = 1.0) -> float:
    """Cores' worth of CPU the whole machine used over the next window_s seconds."""
    first = machine_jiffies()
    time.sleep(window_s)
    last = machine_jiffies()
    return (last[0] - first[0]) / TICKS / window_s


def wait_for_quiet(threshold_cores: float, max_wait_s: float) -> tuple[float, float]:
    """Wait until the machine (while our processes are idle) uses less than threshold_cores,
    at most max_wait_s; returns (seconds waited, the last reading)."""
    start = time.monotonic()
    reading = busy_cores()
    while reading > threshold_cores and time.monotonic() - start < max_wait_s:
        reading = busy_cores()
    return round(time.monotonic() - start, 1), round(reading, 2)
