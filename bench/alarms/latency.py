"""From a device's Send carrying a fault to the alarm visible over REST, at the ingest load.

    python -m bench.alarms latency [--devices 1000] [--duration 20] [--probes 200]

While the ingest benchmark's load runs (bench/ingest: 1000 devices each with one CON Send of
10 points outstanding, 2 Fleet listener processes on one port, fsync on), with every alarm
rule on and findings handed to fleet.alarms.service.AlarmService as `fleet serve` wires it,
`--probes` other streetlights, one every duration/probes seconds, each send one Send carrying
a lamp failure (/3416/0/5 = true). The clock starts just before the Send goes out; it stops
when GET /api/v1/alarms (a separate REST process, polled every 10 ms) lists an alarm of type
`lamp_failure` for that device. Target: p99 <= 1 s. Beside it, the same run's baseline: the
ingest load's own Send->2.04 latency (committed only) and each probe's Send->2.04.

The probes run in this process; the ingest load runs in a forked child, so they do not share
an interpreter. The load's devices are a city's mix (bench/alarms/load.py: streetlights, bins
and access points sending their kind's paths, 3 % with a fault in every Send), so the
evaluator and AlarmService.apply are as busy as in `throughput`; the probes are streetlights of
the same city. The listeners are api.runtime.run_device_edge's: AlarmService with the work
orders' on_changes, the RuleEvaluator on the telemetry writer's commits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiocoap
import cbor2
import httpx
from aiocoap import Code, Message

from bench.coap.loadgen import default_endpoint_name, loopback_target, run_load
from bench.alarms.load import CityPacks, device_row
from bench.coap.servers import ServerGroup
from bench.ingest.database import embedded_server, prepare
from bench.ingest.run import MANY_REQUESTS, free_udp_port

POLL_S = 0.01
PROBE_TIMEOUT_S = 10.0
FAULT = [{-2: "/3416/0/", 0: "5", 4: True}, {0: "3", 2: 100}]


def _probe_name(i: int) -> str:
    return f"alarm-probe-{i:05d}"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _load_in_child(pipe, target, options) -> None:
    result = run_load(target, **options)
    pipe.send({"requests_per_s": result.requests_per_s, "points_per_s": result.points_per_s,
               "p50_ms": result.latency_p50_ms, "p99_ms": result.latency_p99_ms, "acked": result.acked})
    pipe.close()


async def _api_key(dsn: str) -> str:
    from fleet.access.models import Role
    from fleet.access.service import ApiKeyService, TenantService, system_principal
    from fleet.db import Database

    db = await Database.connect(dsn, min_size=1, max_size=2)
    try:
        tenant = await TenantService(db).by_slug("bench-ingest")  # bench.ingest.database.prepare's
        issued = await ApiKeyService(db).issue(system_principal(tenant), Role.ADMIN, "bench-alarms")
        return issued.secret
    finally:
        await db.close()


async def _visible(http: httpx.AsyncClient, device_id: str) -> bool:
    answer = await http.get("/api/v1/alarms", params={"device": device_id, "type": "lamp_failure"})
    answer.raise_for_status()
    body = answer.json()
    items = body.get("items", body.get("alarms", [])) if isinstance(body, dict) else body
    return any(a.get("device_id") == device_id and a.get("type") == "lamp_failure" for a in items)


async def _probe(context, port: int, http: httpx.AsyncClient, device_id: str) -> tuple[float, float]:
    """(Send->2.04 s, Send->visible over REST s) for one probe already registered."""
    request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/dp", payload=cbor2.dumps(FAULT),
                      content_format=112)
    started = time.perf_counter()
    answer = await context.request(request).response
    acked = time.perf_counter() - started
    if answer.code != Code.CHANGED:
        raise RuntimeError(f"probe Send answered {answer.code}")
    while not await _visible(http, device_id):
        if time.perf_counter() - started > PROBE_TIMEOUT_S:
            return acked, float("inf")
        await asyncio.sleep(POLL_S)
    return acked, time.perf_counter() - started


async def _probes(args, port: int, api_url: str, key: str, device_ids: dict[str, str]) -> list[tuple[float, float]]:
    contexts = []
    for i in range(args.probes):
        context = await aiocoap.Context.create_client_context(transports=["udp6"])
        register = Message(code=Code.POST, payload=b"</3/0>,</3416/0>", content_format=40,
                           uri=f"coap://127.0.0.1:{port}/rd?ep={_probe_name(i)}&lt=3600&lwm2m=1.1&b=U")
        answer = await context.request(register).response
        if not answer.code.is_successful():
            raise RuntimeError(f"probe {i} could not register: {answer.code}")
        contexts.append(context)
    spacing = args.duration / max(1, args.probes)
    results = []
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as http:
        await asyncio.sleep(args.warm_up)
        tasks = []
        for i, context in enumerate(contexts):
            tasks.append(asyncio.create_task(_probe(context, port, http, device_ids[_probe_name(i)])))
            await asyncio.sleep(spacing)
        results = await asyncio.gather(*tasks)
    for context in contexts:
        await context.shutdown()
    return results


def run(args: argparse.Namespace) -> list[str]:
    port = args.port or free_udp_port()
    http_port = args.http_port
    target = loopback_target(("127.0.0.1", port))
    load_endpoints = [default_endpoint_name(i) for i in range(args.devices)]
    probes = [_probe_name(i) for i in range(args.probes)]
    with tempfile.TemporaryDirectory(prefix="fleet-bench-alarm-latency-") as work:
        with embedded_server(Path(work)) as dsn:
            row = lambda i, endpoint: device_row(i if i < args.devices else 0, endpoint)  # noqa: E731 - probes: lamps
            prepared = asyncio.run(prepare(dsn, load_endpoints + probes, row))
            key = asyncio.run(_api_key(dsn))
            env = {**os.environ, "FLEET_DATABASE_URL": dsn, "FLEET_HTTP_PORT": str(http_port),
                   "FLEET_RATE_KEY_PER_S": "0", "FLEET_RATE_ADDRESS_PER_S": "0"}
            api = subprocess.Popen([sys.executable, "-m", "bench.alarms.api"], env=env)
            try:
                _wait_for_http(f"http://127.0.0.1:{http_port}/healthz")
                argv = ["-m", "bench.ingest.listener", "--port", str(port), "--rules", "alarms"]
                with ServerGroup(argv, args.processes, target, ready_timeout=60.0, env=env):
                    options = dict(clients=args.devices, requests=MANY_REQUESTS,
                                   duration=args.duration + args.warm_up + 2, window=1, processes=1,
                                   points=10, format="cbor", payload=CityPacks(), register=True,
                                   endpoint_name=default_endpoint_name, register_timeout=60.0)
                    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
                    load = multiprocessing.get_context("fork").Process(
                        target=_load_in_child, args=(sender, target, options), daemon=True)
                    load.start()
                    results = asyncio.run(_probes(args, port, f"http://127.0.0.1:{http_port}", key,
                                                  {e: str(i) for e, i in prepared.device_ids.items()}))
                    load_result = receiver.recv()
                    load.join()
            finally:
                api.terminate()
                api.wait(10)
    acks = [a for a, _ in results]
    visible = [v for _, v in results]
    missing = sum(1 for v in visible if v == float("inf"))
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    return [
        f"bench/alarms latency: {args.devices} load devices, {args.processes} listeners, rules on "
        f"(AlarmService), {args.probes} probes over {args.duration:g} s",
        f"ingest load (same run): {load_result['requests_per_s']:,.0f} requests/s, "
        f"{load_result['points_per_s']:,.0f} points/s, ack p50 {load_result['p50_ms']:.0f} ms, "
        f"p99 {load_result['p99_ms']:.0f} ms",
        f"probe Send -> 2.04 (baseline): p50 {ms(statistics.median(acks))}, p99 {ms(_percentile(acks, 0.99))}",
        f"probe Send -> alarm visible over REST: p50 {ms(statistics.median(visible))}, "
        f"p99 {ms(_percentile(visible, 0.99))}, max {ms(max(visible))}; "
        f"{missing} not visible within {PROBE_TIMEOUT_S:g} s (target p99 <= 1 s)",
    ]


def _wait_for_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.alarms latency", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000, help="ingest load devices")
    parser.add_argument("--processes", type=int, default=2, help="listener processes")
    parser.add_argument("--probes", type=int, default=200, help="streetlights that report one lamp failure each")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds over which probes are spread")
    parser.add_argument("--warm-up", type=float, default=3.0, help="seconds of load before the first probe")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--http-port", type=int, default=8791)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from fleet.logging import configure_logging
    from fleet.settings import LogSettings
    configure_logging(LogSettings(level="WARNING"))
    lines = run(args)
    print(json.dumps({"lines": lines}) if args.json else "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
