"""What one load run measured: per-worker reports and the aggregate :class:`LoadResult`."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field

from bench.coap.endpoint import ExchangeStats
from protocols.coap.message import code_text, is_success


@dataclass
class WorkerReport:
    """Everything a worker process hands back; plain data so it pickles across processes."""

    clients: int
    load: ExchangeStats
    registration: ExchangeStats
    ok: int = 0
    load_start: float = 0.0
    last_ok: float = 0.0
    load_end: float = 0.0
    cpu_s: float = 0.0
    machine_busy: tuple[int, int] = (0, 0)  # (busy, total) jiffies of all cores over the load
    acked_per_client: dict[int, int] = field(default_factory=dict)
    acked_requests: list[tuple[int, int]] | None = None
    locations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    registration_failures: Counter = field(default_factory=Counter)
    deregistered: int = 0
    # DTLS: handshakes finished and failed, and the seconds from the first socket to the last end.
    handshakes: int = 0
    handshake_failures: int = 0
    handshake_s: float = 0.0


def percentile_ms(sorted_seconds: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted latencies in seconds, in milliseconds."""
    if not sorted_seconds:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_seconds)))
    return round(sorted_seconds[rank - 1] * 1000, 3)


@dataclass
class LoadResult:
    """Aggregate of one run. Rates count 2.xx answers only and use the load phase's wall time,
    from the moment all workers started sending to the last 2.xx answer."""

    target: str
    clients: int
    processes: int
    window: int
    points_per_request: int
    duration_s: float
    requests_sent: int
    acked: int
    failed_by_code: dict[str, int]
    timeouts: int
    resets: int
    unanswered: int
    retransmissions: int
    requests_per_s: float
    points_acked: int
    points_per_s: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    separate_responses: int
    duplicate_responses: int
    token_mismatches: int
    icmp_errors: int
    dtls_failures: int
    server_requests: int
    malformed: int
    mid_reuse_within_lifetime: int
    registered: int
    registration_failed: dict[str, int]
    registration_p50_ms: float
    registration_p99_ms: float
    registration_retransmissions: int
    deregistered: int
    generator_cpu_s: float
    generator_cpu_percent: float
    machine_cpu_percent: float  # all cores, all processes: shows interference from strangers
    acked_per_client: dict[int, int]
    locations: dict[str, tuple[str, ...]]
    acked_requests: list[tuple[int, int]] | None = None
    servers: list[dict] = field(default_factory=list)  # STATS of server processes, if known
    # The load phase on CLOCK_MONOTONIC, which all processes share: to line up other samples.
    load_started_at: float = 0.0
    load_ended_at: float = 0.0
    handshakes: int = 0
    handshake_failures: int = 0
    handshakes_per_s: float = 0.0  # all workers' handshakes over the longest worker's wait

    def to_dict(self, *, details: bool = False) -> dict:
        """JSON-ready; the per-client maps and ack list only with ``details``."""
        data = asdict(self)
        if not details:
            for key in ("acked_per_client", "locations", "acked_requests"):
                data.pop(key)
        return data

    def summary_lines(self) -> list[str]:
        lines = [
            f"target             {self.target}",
            f"clients            {self.clients} in {self.processes} process(es), window {self.window}",
            f"duration_s         {self.duration_s:.3f}",
            f"requests_sent      {self.requests_sent}",
            f"acked_2xx          {self.acked}",
            f"requests_per_s     {self.requests_per_s:.1f}",
            f"points_acked       {self.points_acked}",
            f"points_per_s       {self.points_per_s:.1f}",
            f"latency_p50_ms     {self.latency_p50_ms}",
            f"latency_p90_ms     {self.latency_p90_ms}",
            f"latency_p99_ms     {self.latency_p99_ms}",
            f"latency_max_ms     {self.latency_max_ms}",
            f"failed_by_code     {self.failed_by_code or '-'}",
            f"timeouts           {self.timeouts}",
            f"resets             {self.resets}",
            f"unanswered         {self.unanswered}",
            f"retransmissions    {self.retransmissions}",
            f"separate_responses {self.separate_responses}",
            f"generator_cpu      {self.generator_cpu_percent:.0f}% of one core per process",
            f"machine_cpu        {self.machine_cpu_percent:.0f}% of all cores",
        ]
        if self.registered or self.registration_failed:
            lines.append(
                f"registered         {self.registered}, failed {self.registration_failed or 0}, "
                f"p50 {self.registration_p50_ms} ms, p99 {self.registration_p99_ms} ms, "
                f"retransmissions {self.registration_retransmissions}, "
                f"deregistered {self.deregistered}"
            )
        for server in self.servers:
            lines.append("server             " + " ".join(f"{k}={v}" for k, v in server.items()))
        if self.handshakes or self.handshake_failures:
            lines.append(f"dtls_handshakes    {self.handshakes} ({self.handshakes_per_s:.1f}/s), "
                         f"failed {self.handshake_failures}")
        for name in ("duplicate_responses", "token_mismatches", "icmp_errors", "dtls_failures", "server_requests",
                     "malformed", "mid_reuse_within_lifetime"):
            if getattr(self, name):
                lines.append(f"{name:<18} {getattr(self, name)}")
        return lines


def aggregate(
    reports: list[WorkerReport], *, target: str, window: int, points_per_request: int
) -> LoadResult:
    load_codes: Counter = Counter()
    latencies = array("d")
    registration_latencies = array("d")
    totals: Counter = Counter()
    acked_per_client: dict[int, int] = {}
    locations: dict[str, tuple[str, ...]] = {}
    registration_failed: Counter = Counter()
    acked_requests = [] if any(r.acked_requests is not None for r in reports) else None
    for report in reports:
        stats = report.load
        load_codes.update(stats.responses_by_code)
        latencies.extend(stats.latencies)
        registration_latencies.extend(report.registration.latencies)
        for name in ("started", "retransmissions", "timeouts", "resets", "cancelled",
                     "separate_responses", "duplicate_responses", "token_mismatches",
                     "icmp_errors", "dtls_failures", "server_requests", "malformed", "mid_reuse_within_lifetime"):
            totals[name] += getattr(stats, name)
        totals["registration_retransmissions"] += report.registration.retransmissions
        acked_per_client.update(report.acked_per_client)
        locations.update(report.locations)
        registration_failed.update(report.registration_failures)
        totals["deregistered"] += report.deregistered
        if acked_requests is not None and report.acked_requests:
            acked_requests.extend(report.acked_requests)

    acked = sum(count for code, count in load_codes.items() if is_success(code))
    starts = [r.load_start for r in reports if r.load_start]
    ends = [r.last_ok or r.load_end for r in reports if r.load_start]
    duration = (max(ends) - min(starts)) if starts else 0.0
    cpu = sum(r.cpu_s for r in reports)
    ordered = sorted(latencies)
    busy, total = reports[0].machine_busy if reports else (0, 0)
    registration_ordered = sorted(registration_latencies)
    handshakes = sum(r.handshakes for r in reports)
    handshake_s = max((r.handshake_s for r in reports), default=0.0)
    return LoadResult(
        target=target,
        clients=sum(r.clients for r in reports),
        processes=len(reports),
        window=window,
        points_per_request=points_per_request,
        duration_s=round(duration, 4),
        requests_sent=totals["started"],
        acked=acked,
        failed_by_code={code_text(c): n for c, n in sorted(load_codes.items()) if not is_success(c)},
        timeouts=totals["timeouts"],
        resets=totals["resets"],
        unanswered=totals["cancelled"],
        retransmissions=totals["retransmissions"],
        requests_per_s=round(acked / duration, 1) if duration > 0 else 0.0,
        points_acked=acked * points_per_request,
        points_per_s=round(acked * points_per_request / duration, 1) if duration > 0 else 0.0,
        latency_p50_ms=percentile_ms(ordered, 0.50),
        latency_p90_ms=percentile_ms(ordered, 0.90),
        latency_p99_ms=percentile_ms(ordered, 0.99),
        latency_max_ms=percentile_ms(ordered, 1.0),
        separate_responses=totals["separate_responses"],
        duplicate_responses=totals["duplicate_responses"],
        token_mismatches=totals["token_mismatches"],
        icmp_errors=totals["icmp_errors"],
        dtls_failures=totals["dtls_failures"],
        server_requests=totals["server_requests"],
        malformed=totals["malformed"],
        mid_reuse_within_lifetime=totals["mid_reuse_within_lifetime"],
        registered=len(locations),
        registration_failed=dict(registration_failed),
        registration_p50_ms=percentile_ms(registration_ordered, 0.50),
        registration_p99_ms=percentile_ms(registration_ordered, 0.99),
        registration_retransmissions=totals["registration_retransmissions"],
        deregistered=totals["deregistered"],
        generator_cpu_s=round(cpu, 3),
        generator_cpu_percent=round(100 * cpu / duration / len(reports), 1) if duration > 0 else 0.0,
        machine_cpu_percent=round(100 * busy / total, 1) if total else math.nan,
        acked_per_client=acked_per_client,
        locations=locations,
        acked_requests=acked_requests,
        load_started_at=min(starts) if starts else 0.0,
        load_ended_at=max(ends) if ends else 0.0,
        handshakes=handshakes,
        handshake_failures=sum(r.handshake_failures for r in reports),
        handshakes_per_s=round(handshakes / handshake_s, 1) if handshake_s > 0 else 0.0,
    )
