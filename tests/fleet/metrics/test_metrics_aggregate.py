"""The node's metrics merged from its workers' scrapes: sums, the earliest start, counters that never go down."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fleet.metrics.aggregate import NodeAggregate


def scrape(text: str) -> list:
    return list(text_string_to_metric_families(text))


def worker(*, started: float = 100.0, requests: float = 0, sends: float = 0, backlog: float = 0,
           info: str = "3.11", max_fds: float = 1024) -> list:
    """A worker's scrape as its metrics server serves it (prometheus_client's text format)."""
    return scrape(
        f"# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
        f"# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {started}\n"
        f"# HELP process_max_fds Maximum number of open file descriptors.\n"
        f"# TYPE process_max_fds gauge\nprocess_max_fds {max_fds}\n"
        f"# HELP python_info Python platform information\n"
        f'# TYPE python_info gauge\npython_info{{version="{info}"}} 1.0\n'
        f"# HELP fleet_coap_requests_total CoAP requests answered, by method and response code\n"
        f"# TYPE fleet_coap_requests_total counter\n"
        f'fleet_coap_requests_total{{code="2.04",method="POST"}} {requests}\n'
        f"# HELP fleet_lwm2m_sends_total LwM2M Send operations received (POST /dp)\n"
        f"# TYPE fleet_lwm2m_sends_total counter\nfleet_lwm2m_sends_total {sends}\n"
        f"# HELP fleet_telemetry_backlog_points Data points waiting for the telemetry writer\n"
        f"# TYPE fleet_telemetry_backlog_points gauge\nfleet_telemetry_backlog_points {backlog}\n")


def values(families: list) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for family in families for s in family.samples}


def value(families: list, name: str, **labels: str) -> float:
    return values(families)[(name, frozenset(labels.items()))]


def render(families: list) -> str:
    class Merged:
        def collect(self):
            return families
    return generate_latest(Merged()).decode()


def test_the_same_series_of_every_worker_are_summed():
    node = NodeAggregate()
    merged = node.merge({"coap-1": worker(requests=3, sends=2, backlog=5, started=200),
                         "coap-2": worker(requests=4, sends=1, backlog=1, started=150, max_fds=4096)})
    assert value(merged, "fleet_coap_requests_total", code="2.04", method="POST") == 7
    assert value(merged, "fleet_lwm2m_sends_total") == 3
    assert value(merged, "fleet_telemetry_backlog_points") == 6
    # What describes a process rather than counting in it is not summed.
    assert value(merged, "process_start_time_seconds") == 150
    assert value(merged, "process_max_fds") == 4096
    assert value(merged, "python_info", version="3.11") == 1


def test_the_names_help_and_types_stay_as_each_worker_serves_them():
    registry = CollectorRegistry()
    Counter("fleet_http_requests", "HTTP requests answered", ["route"], registry=registry).labels("/a").inc(2)
    Histogram("fleet_http_request_duration_seconds", "Time to answer", ["route"], buckets=(0.1, 1.0),
              registry=registry).labels("/a").observe(0.5)
    Gauge("fleet_scheduler_leader", "1 while this process leads", registry=registry).set(1)
    served = generate_latest(registry).decode()
    node = NodeAggregate()
    # One worker alone: the node serves exactly what it serves.
    assert render(node.merge({"http-1": scrape(served)})) == served
    doubled = render(node.merge({"http-1": scrape(served), "http-2": scrape(served)}))
    assert 'fleet_http_request_duration_seconds_bucket{le="1.0",route="/a"} 2.0' in doubled
    assert 'fleet_http_requests_total{route="/a"} 4.0' in doubled
    assert "# TYPE fleet_http_requests_total counter" in doubled and "fleet_scheduler_leader 2.0" in doubled


def test_a_restarted_worker_keeps_the_node_s_counters_going_up():
    node = NodeAggregate()
    node.merge({"coap-1": worker(requests=10, sends=4), "coap-2": worker(requests=1)})
    # coap-1 restarted (a new start time) and counted 30 already: more than before, still a restart.
    merged = node.merge({"coap-1": worker(requests=30, sends=1, started=300), "coap-2": worker(requests=2)})
    assert value(merged, "fleet_coap_requests_total", code="2.04", method="POST") == 10 + 30 + 2
    assert value(merged, "fleet_lwm2m_sends_total") == 4 + 1
    assert value(merged, "process_start_time_seconds") == 100
    merged = node.merge({"coap-1": worker(requests=31, started=300), "coap-2": worker(requests=2)})
    assert value(merged, "fleet_coap_requests_total", code="2.04", method="POST") == 10 + 31 + 2


def test_a_series_going_down_is_a_restart_even_without_a_start_time():
    node = NodeAggregate()
    text = "# TYPE fleet_lwm2m_sends_total counter\nfleet_lwm2m_sends_total {}\n"
    node.merge({"coap-1": scrape(text.format(8))})
    assert value(node.merge({"coap-1": scrape(text.format(3))}), "fleet_lwm2m_sends_total") == 11
    assert value(node.merge({"coap-1": scrape(text.format(5))}), "fleet_lwm2m_sends_total") == 13


def test_a_worker_that_does_not_answer_keeps_its_counts_but_not_its_gauges():
    node = NodeAggregate()
    node.merge({"coap-1": worker(requests=10, backlog=7), "coap-2": worker(requests=1, backlog=1)})
    merged = node.merge({"coap-2": worker(requests=2, backlog=1)})
    # Left out, its counters would drop and come back: Prometheus would read a reset and a jump.
    assert value(merged, "fleet_coap_requests_total", code="2.04", method="POST") == 12
    assert value(merged, "fleet_telemetry_backlog_points") == 1
    # Back after a restart (the supervisor restarted it meanwhile): what it had counted stays.
    merged = node.merge({"coap-1": worker(requests=1, started=400), "coap-2": worker(requests=2)})
    assert value(merged, "fleet_coap_requests_total", code="2.04", method="POST") == 13


def test_a_gauge_no_worker_reports_any_more_is_gone():
    node = NodeAggregate()
    text = '# TYPE fleet_campaign_devices gauge\nfleet_campaign_devices{{campaign="{}"}} 3\n'
    node.merge({"http-1": scrape(text.format("a"))})
    merged = node.merge({"http-1": scrape(text.format("b"))})
    assert values(merged) == {("fleet_campaign_devices", frozenset({("campaign", "b")})): 3}
