"""A node's metrics from its workers' scrapes: summed, and counters monotonic across worker restarts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.metrics_core import Metric

# (family name, sample name, labels sorted): one series.
Key = tuple[str, str, tuple[tuple[str, str], ...]]

# Only go up (until the process restarts): what a restarted worker had counted is kept. (A
# summary's quantiles would be summed as well: Fleet has no summary.)
MONOTONIC_TYPES = frozenset({"counter", "histogram", "summary"})
# The process's start (the worker's identity: a new value is a new process) and the node's:
# the earliest of its processes, the supervisor's.
START_TIME = "process_start_time_seconds"


def combine(name: str, typ: str, values: list[float]) -> float:
    """One value from the workers' values of a gauge: the earliest start, the largest of what
    describes the process rather than counts in it (`python_info`'s 1, `process_max_fds`), the
    sum of the rest (connections, memory, backlog: the node's is every worker's)."""
    if name == START_TIME:
        return min(values)
    if typ in ("info", "stateset") or name.endswith(("_info", "_max_fds")):
        return max(values)
    return sum(values)


class NodeAggregate:
    """Merges each scrape of the node's workers into one set of families.

    Gauges are those of the workers that answered. Counters and histograms are, for each
    worker, what it reported last (a worker that did not answer this time still counts what it
    had counted) plus what its earlier processes had counted before they were restarted: the
    node's counters never go down, as prometheus_client's multiprocess mode keeps a dead
    process's files. A restart shows as a new process start time, or (without one) as a series
    going down; a series a worker stops reporting is kept the same way.
    """

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, str]] = {}  # name -> type, help, unit; first seen first
        self._order: dict[str, dict[Key, None]] = {}  # family -> its series, first seen first
        self._last: dict[str, dict[Key, float]] = {}  # worker -> its monotonic series, last scraped
        self._started: dict[str, float] = {}  # worker -> its process's start time, last scraped
        self._retired: dict[Key, float] = {}  # what restarted processes had counted

    def merge(self, scrapes: Mapping[str, Iterable[Metric]]) -> list[Metric]:
        """The node's families, from the families of each worker that answered this time."""
        gauges: dict[Key, list[float]] = {}
        for worker, families in scrapes.items():
            counted: dict[Key, float] = {}
            started = None
            for family in families:
                self._families.setdefault(family.name, (family.type, family.documentation, family.unit))
                order = self._order.setdefault(family.name, {})
                monotonic = family.type in MONOTONIC_TYPES
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue  # a timestamp: summing it means nothing (Fleet turns them off)
                    key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                    order.setdefault(key)
                    if monotonic:
                        counted[key] = sample.value
                    else:
                        gauges.setdefault(key, []).append(sample.value)
                    if sample.name == START_TIME and not sample.labels:
                        started = sample.value
            self._took(worker, counted, started)
        return self._families_of(gauges)

    def _took(self, worker: str, counted: dict[Key, float], started: float | None) -> None:
        before = self._last.get(worker, {})
        restarted = started is not None and self._started.get(worker, started) != started
        for key, value in before.items():
            now = counted.get(key)
            if restarted or now is None or now < value:
                self._retired[key] = self._retired.get(key, 0.0) + value
        self._last[worker] = counted
        if started is not None:
            self._started[worker] = started

    def _families_of(self, gauges: dict[Key, list[float]]) -> list[Metric]:
        counted = dict(self._retired)
        for series in self._last.values():
            for key, value in series.items():
                counted[key] = counted.get(key, 0.0) + value
        merged = []
        for name, (typ, documentation, unit) in self._families.items():
            family = Metric(name, documentation, typ, unit)
            if typ in MONOTONIC_TYPES:
                for key in self._order[name]:
                    if key in counted:
                        family.add_sample(key[1], dict(key[2]), counted[key])
            else:
                # A gauge's series no worker reports any more (a city's campaign ended) is forgotten.
                self._order[name] = order = {key: None for key in self._order[name] if key in gauges}
                for key in order:
                    family.add_sample(key[1], dict(key[2]), combine(name, typ, gauges[key]))
            merged.append(family)
        return merged
