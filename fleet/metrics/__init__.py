"""This process's Prometheus metrics: what the code paths count, defined once per process.

The instruments live in prometheus_client's default registry (one per process, whatever the
number of apps or listeners a test starts); the city-wide gauges read from the database are
a collector each `/metrics` server registers on its own (fleet.metrics.service).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# No `*_created` sample beside each counter and histogram: it doubles the series for a
# timestamp Prometheus does not need (a restart shows as the counter dropping to 0).
disable_created_metrics()

# Group commits take milliseconds; seconds mean the database is struggling.
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

COAP_REQUESTS = Counter("fleet_coap_requests", "CoAP requests answered, by method and response code",
                        ["method", "code"])
LWM2M_SENDS = Counter("fleet_lwm2m_sends", "LwM2M Send operations received (POST /dp)")
TELEMETRY_POINTS = Counter("fleet_telemetry_points_committed", "Data points committed by the telemetry writer")
TELEMETRY_COMMIT = Histogram("fleet_telemetry_commit_duration_seconds",
                             "Time of one group commit of the telemetry writer", buckets=_COMMIT_BUCKETS)
TELEMETRY_BACKLOG = Gauge("fleet_telemetry_backlog_points", "Data points waiting for the telemetry writer")
DISPATCHER_IN_FLIGHT = Gauge("fleet_dispatcher_in_flight", "Command exchanges with devices under way on this node")
REGISTRATION_FOLLOWUPS_WAITING = Gauge(
    "fleet_registration_followups_waiting",
    "Devices whose post-registration work (the /3/0 read, re-observing, command wake-up) waits for its budget")
# completed, failed, merged (a device registered again while its follow-up waited: one for both),
# abandoned (waiting when the listener stopped), cancelled (under way when it stopped).
REGISTRATION_FOLLOWUPS = Counter("fleet_registration_followups",
                                 "Post-registration follow-ups by outcome", ["outcome"])
SCHEDULER_LEADER = Gauge("fleet_scheduler_leader", "1 while this process leads the scheduler, else 0")
HTTP_REQUESTS = Counter("fleet_http_requests", "HTTP requests answered, by method, route template and status",
                        ["method", "route", "status"])
# Per process: what this process's statements finished (a rolled-back transaction's count
# stays counted, a rare overcount). Label values are the command's operation and final status.
COMMAND_TARGETS_FINISHED = Counter(
    "fleet_command_targets_finished",
    "Device commands (one target of a command) finished by this process, by operation and final state "
    "(succeeded, failed, expired, cancelled, skipped)", ["operation", "state"])
HTTP_DURATION = Histogram("fleet_http_request_duration_seconds", "Time to answer an HTTP request, by route template",
                          ["method", "route"])

_METHODS = {1: "GET", 2: "POST", 3: "PUT", 4: "DELETE", 5: "FETCH", 6: "PATCH", 7: "iPATCH"}
# (method, code) as the wire's integers -> the labelled counter: the fast path pays one dict
# lookup per answer, not prometheus_client's label handling.
_coap_children: dict[tuple[int, int], Counter] = {}


def coap_answered(method: int, code: int) -> None:
    """Count a CoAP request answered (method and code as on the wire, e.g. 2 and 0x44)."""
    child = _coap_children.get((method, code))
    if child is None:
        child = COAP_REQUESTS.labels(_METHODS.get(method, str(method)), f"{code >> 5}.{code & 0x1F:02d}")
        _coap_children[(method, code)] = child
    child.inc()


def command_targets_finished(tally: list[list]) -> None:
    """Count device commands finished, as a statement tallied them: [operation, state, n] each."""
    for operation, state, n in tally:
        COMMAND_TARGETS_FINISHED.labels(operation, state).inc(n)


def follow(gauge: Gauge, owner: object, read: Callable[[object], float]) -> None:
    """Make `gauge` read `read(owner)` at scrape time, for as long as owner lives (0 after):
    nothing to update on the hot path, and a stopped component is not kept alive."""
    ref = weakref.ref(owner)

    def value() -> float:
        alive = ref()
        return read(alive) if alive is not None else 0

    gauge.set_function(value)


class _CoapsCollector:
    """The coaps listeners' counters (protocols.coap.dtls.DtlsServer's plain attributes), read
    at scrape time: nothing extra on the DTLS hot path. A closed listener's counts leave the
    sums (Prometheus sees a counter reset, as after a restart)."""

    def __init__(self) -> None:
        self.servers: weakref.WeakSet = weakref.WeakSet()

    def collect(self):
        handshakes = CounterMetricFamily("fleet_coaps_handshakes", "DTLS handshakes on the coaps listener, "
                                         "by mode (psk, rpk) and outcome (ok, failed, limited, deferred)",
                                         labels=["mode", "outcome"])
        dropped = CounterMetricFamily("fleet_coaps_records_dropped",
                                      "DTLS datagrams dropped: no session for the address, or over the peer cap")
        peers = GaugeMetricFamily("fleet_coaps_peers", "Addresses with DTLS state (sessions and handshakes)")
        servers = list(self.servers)
        for mode in ("psk", "rpk"):
            handshakes.add_metric([mode, "ok"], sum(server.handshakes_ok[mode] for server in servers))
            handshakes.add_metric([mode, "failed"], sum(server.handshakes_failed[mode] for server in servers))
        handshakes.add_metric(["any", "limited"], sum(server.handshakes_limited for server in servers))
        handshakes.add_metric(["any", "deferred"], sum(server.handshakes_deferred for server in servers))
        dropped.add_metric([], sum(server.records_dropped for server in servers))
        peers.add_metric([], sum(server.peers for server in servers))
        return [handshakes, dropped, peers]


_coaps = _CoapsCollector()
REGISTRY.register(_coaps)


def follow_coaps(server) -> None:
    """Count a coaps listener's handshakes, drops and peers in /metrics while it lives."""
    _coaps.servers.add(server)
