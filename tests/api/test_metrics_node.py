"""A node's /metrics over real HTTP, merged from two workers' metrics servers on real Unix sockets."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from api.metrics import NodeMetrics, worker_metrics
from fleet.settings import MetricsSettings
from tests.conftest import free_port


STARTED = 1.7e9  # the workers' processes started (epoch seconds) before the test's own


def instruments(sends: int, backlog: float, *, commit_s: float = 0.005, started: float = STARTED) -> CollectorRegistry:
    """A worker's own instruments (each worker process has its default registry: here, one each),
    with its process's start: what tells the supervisor a worker was restarted."""
    registry = CollectorRegistry()
    Gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
          registry=registry).set(started)
    Counter("fleet_lwm2m_sends", "LwM2M Send operations received (POST /dp)", registry=registry).inc(sends)
    Gauge("fleet_telemetry_backlog_points", "Data points waiting for the telemetry writer",
          registry=registry).set(backlog)
    Histogram("fleet_telemetry_commit_duration_seconds", "Time of one group commit of the telemetry writer",
              buckets=(0.01, 1.0), registry=registry).observe(commit_s)
    return registry


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_a_node_serves_the_sum_of_its_workers_and_its_counters_survive_a_restart(db):
    with tempfile.TemporaryDirectory(prefix="fleet-metrics-") as sockets:  # short: a socket path has ~100 bytes
        paths = {"coap-1": f"{sockets}/coap-1", "http-1": f"{sockets}/http-1"}
        coap = worker_metrics(db, paths["coap-1"], city=False, registry=instruments(sends=3, backlog=5))
        http = worker_metrics(db, paths["http-1"], city=True, registry=instruments(sends=4, backlog=1, commit_s=0.5))
        node = NodeMetrics(MetricsSettings(port=free_port(), token="s3cret"), lambda: paths)
        url = f"http://127.0.0.1:{node.settings.port}/metrics"
        async with node.serving(), httpx.AsyncClient(headers={"Authorization": "Bearer s3cret"}) as client:
            async with coap.serving(), http.serving():
                response = await client.get(url)
                assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
                scraped = samples(response.text)
                assert scraped[("fleet_lwm2m_sends_total", frozenset())] == 7
                assert scraped[("fleet_telemetry_backlog_points", frozenset())] == 6
                assert scraped[("fleet_telemetry_commit_duration_seconds_count", frozenset())] == 2
                assert scraped[("fleet_telemetry_commit_duration_seconds_bucket", frozenset({("le", "0.01")}))] == 1
                # Each worker's pools: the node's are their sum.
                most = db.pool.get_max_size()
                assert scraped[("fleet_db_pool_max_connections", frozenset({("pool", "system")}))] == 2 * most
                # The city's gauges are read by one worker only, and the supervisor's process is there.
                assert http.city.reads == 1 and coap.city is None
                assert response.text.count("# TYPE fleet_registrations_online gauge") == 1
                assert scraped[("process_start_time_seconds", frozenset())] == STARTED  # the earliest
                assert (await client.get(url, headers={"Authorization": "Bearer wrong"})).status_code == 401
                head = await client.head(url)
                assert head.status_code == 200 and head.content == b""
                openmetrics = await client.get(url, headers={"Accept": "application/openmetrics-text"})
                assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
                assert openmetrics.text.endswith("# EOF\n")

            # coap-1 is restarted: a new process, counting from zero again. The node's counters
            # do not go down, before (not answering) nor after (answering again).
            with capture_logs() as logs:
                stopped = samples((await client.get(url)).text)
                assert (await client.get(url)).status_code == 200
            assert stopped[("fleet_lwm2m_sends_total", frozenset())] == 7
            assert ("fleet_telemetry_backlog_points", frozenset()) not in stopped  # nobody's gauge
            assert [entry["worker"] for entry in logs if entry["log_level"] == "warning"] == ["coap-1", "http-1"]
            again = instruments(sends=1, backlog=0, started=STARTED + 60)
            restarted = worker_metrics(db, paths["coap-1"], city=False, registry=again)
            async with restarted.serving(), http.serving():
                scraped = samples((await client.get(url)).text)
            assert scraped[("fleet_lwm2m_sends_total", frozenset())] == 3 + 4 + 1
            assert scraped[("fleet_telemetry_commit_duration_seconds_count", frozenset())] == 3
            assert scraped[("fleet_telemetry_commit_duration_seconds_bucket", frozenset({("le", "0.01")}))] == 2
        assert not Path(paths["coap-1"]).exists()  # a stopped worker removes its socket
