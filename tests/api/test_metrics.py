"""Prometheus /metrics over real HTTP after real traffic, its port's error, and the example dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from datetime import timedelta
from pathlib import Path

import aiocoap
import cbor2
import httpx
import pytest
from aiocoap import Code, Message
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import MetricsPortTaken, MetricsServer
from api.runtime import serving_metrics
from fleet.metrics.service import CITY_GAUGES, POOL_GAUGES
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.settings import DatabaseSettings, MetricsSettings, Settings
from protocols.lwm2m.listener import open_listener
from tests.conftest import free_port, make_city, serve_api

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "fleet-dashboard.json"
COMPOSE = Path(__file__).parents[2] / "docker-compose.yml"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "gauge": ("",)}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def test_scrape_after_http_and_coap_traffic(db):
    coap_client = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        async with open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0)) as listener:
            await scrape_after_traffic(db, listener, coap_client)
    finally:
        await coap_client.shutdown()


async def scrape_after_traffic(db, listener, coap_client) -> None:
    city = await make_city(db, "seoul")
    await DeviceService(db).create_validated(
        city.principal, NewDevice(kind=DeviceKind.WASTE_BIN, endpoint="bin-m1", lat=37.5, lon=127.0))
    metrics = MetricsServer(db, MetricsSettings(port=free_port()))
    url = f"http://127.0.0.1:{metrics.settings.port}/metrics"
    async with metrics.serving(), serve_api(db) as api, httpx.AsyncClient() as client:
        before = samples((await client.get(url)).text)
        devices = await client.get(f"{api}/api/v1/devices", headers={"Authorization": f"Bearer {city.key}"})
        assert devices.status_code == 200
        base = f"coap://127.0.0.1:{listener.port}"
        register = Message(code=Code.POST, uri=f"{base}/rd?ep=bin-m1&lt=300&lwm2m=1.1&b=U",
                           payload=b"</3435/0>", content_format=40)
        assert (await coap_client.request(register).response).code == Code.CREATED
        send = Message(code=Code.POST, uri=f"{base}/dp", content_format=112,
                       payload=cbor2.dumps([{-2: "/3435/0/", 0: "2", 2: 41.5}, {0: "3", 2: 12.0}]))
        assert (await coap_client.request(send).response).code == Code.CHANGED

        metrics.city.max_age_s = 0  # the first scrape's city-wide counts would serve this one
        response = await client.get(url)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        after = samples(response.text)
        assert (await client.get(url.replace("/metrics", "/other"))).status_code == 404

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # The route's template, never the raw path.
    assert moved("fleet_http_requests_total", method="GET", route="/api/v1/devices", status="200") == 1
    assert moved("fleet_http_request_duration_seconds_count", method="GET", route="/api/v1/devices") == 1
    assert moved("fleet_coap_requests_total", method="POST", code="2.01") == 1
    assert moved("fleet_coap_requests_total", method="POST", code="2.04") == 1
    assert moved("fleet_lwm2m_sends_total") == 1
    assert moved("fleet_telemetry_points_committed_total") >= 2
    assert moved("fleet_telemetry_commit_duration_seconds_count") >= 1
    assert value(after, "fleet_registrations_online", tenant="seoul", kind="waste_bin") == 1
    assert value(after, "fleet_db_pool_connections", pool="system") >= 1
    names = {name for name, _ in after}
    assert {"fleet_telemetry_backlog_points", "fleet_dispatcher_in_flight", "fleet_scheduler_leader",
            "fleet_db_pool_connections_in_use", "process_cpu_seconds_total"} <= names


async def test_a_taken_port_says_which_setting_moves_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(DatabaseSettings(url=None, data_dir=Path()), metrics=MetricsSettings(
            port=taken.getsockname()[1]))
        # One line, worded as main()'s other one-line errors.
        with pytest.raises(SystemExit, match="^fleet: cannot serve metrics on .*FLEET_METRICS_PORT or --metrics-port"):
            async with serving_metrics(None, settings):  # type: ignore[arg-type]
                pass


async def test_a_metrics_token_is_asked_for():
    server = MetricsServer(None, MetricsSettings(port=free_port(), token="s3cret"))  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{server.settings.port}/metrics"
    async with server.serving(), httpx.AsyncClient() as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            refused = await client.get(url, headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert server._authorized("Bearer s3cret") and server._authorized("bearer  s3cret")
    without_token = MetricsServer(None, MetricsSettings())  # type: ignore[arg-type]
    assert without_token._authorized("")  # no token set: open, as Prometheus expects by default


def exported_names() -> set[str]:
    """Every sample name Fleet's /metrics can carry."""
    names = {name for name, *_ in CITY_GAUGES} | set(POOL_GAUGES)
    for family in REGISTRY.collect():
        if family.name.startswith("fleet_"):
            names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


def test_the_dashboard_queries_only_what_fleet_exports():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["templating"]["list"][0] == {
        "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
        "current": {}, "hide": 0}
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    used = {name for query in queries for name in re.findall(r"\bfleet_[a-z0-9_]+", query)}
    assert used and used <= exported_names(), used - exported_names()
    # Every family has a panel.
    assert {name for name, *_ in CITY_GAUGES} | set(POOL_GAUGES) <= used


def test_compose_publishes_the_metrics_port_to_this_machine_only():
    """It has no authentication: Prometheus in compose reaches fleet:9464 on its network."""
    published = re.findall(r'^\s*-\s*"([^"]*9464[^"]*)"', COMPOSE.read_text(), re.MULTILINE)
    assert published and all(mapping.startswith("127.0.0.1:") for mapping in published), published


async def test_a_scraper_still_sending_does_not_hold_the_process():
    server = MetricsServer(None, MetricsSettings(port=free_port()))  # type: ignore[arg-type]
    async with server.serving():
        reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")  # and no more: its head never ends
        await writer.drain()
        while not server._connections:
            await asyncio.sleep(0.01)
    # Dropped as the server stopped, not after READ_S (wait_closed() waits for it on 3.12+).
    assert not server._connections
    with contextlib.suppress(ConnectionError):
        assert await reader.read() == b""
    writer.close()


async def test_a_host_that_does_not_resolve_is_named_so():
    server = MetricsServer(None, MetricsSettings(host="999.1.1.1", port=free_port()))  # type: ignore[arg-type]
    with pytest.raises(MetricsPortTaken, match="999.1.1.1:[0-9]+: ") as refused:
        async with server.serving():
            pass
    assert "Unknown error" not in str(refused.value)  # os.strerror of getaddrinfo's negative errno
