"""`fleet serve --coap-workers 2 --http-workers 2`: a supervisor and four worker processes on one node;
a coap worker killed is restarted on the same socket, and SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from aiocoap import Code

from bench.processes import ended
from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import free_port, make_city
from tests.protocols.devices import MiniDevice, Resource

ROOT = Path(__file__).resolve().parents[2]
DEVICES = 12  # each on its own port: the kernel spreads them over both coap workers
LEVEL = "/3416/0/1"
READING = [{-2: "/3416/0/", 0: "1", 2: 80}]


class NodeProcess:
    """`fleet serve` as a subprocess, its JSON log lines read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict] = []
        self.changed = asyncio.Event()

    async def read_log(self) -> None:
        async for raw in self.process.stderr:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:  # a traceback, or a command-line error
                self.lines.append({"text": raw.decode(errors="replace")})
            self.changed.set()
        self.lines.append({"text": "(the node's log ended)"})
        self.changed.set()

    async def until(self, found: Callable[[list[dict]], object], what: str, timeout_s: float = 90) -> object:
        try:
            async with asyncio.timeout(timeout_s):
                while not (result := found(self.lines)):
                    if self.lines and self.lines[-1] == {"text": "(the node's log ended)"}:
                        raise TimeoutError
                    self.changed.clear()
                    await self.changed.wait()
                return result
        except TimeoutError:
            tail = "\n".join(json.dumps(line) for line in self.lines[-30:])
            raise AssertionError(f"no {what} in the node's log:\n{tail}") from None

    async def within(self, step, what: str, timeout_s: float = 30):
        """`step` awaited, or the node's last lines when it does not end in time."""
        try:
            async with asyncio.timeout(timeout_s):
                return await step
        except TimeoutError:
            tail = "\n".join(json.dumps(line) for line in self.lines[-30:])
            raise AssertionError(f"{what} did not end; the node's log:\n{tail}") from None

    def events(self, event: str, **fields) -> list[dict]:
        return [line for line in self.lines
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())]


@pytest.fixture
async def node(database_dsn) -> AsyncIterator[tuple[NodeProcess, int, int, int]]:
    http_port, coap_port, metrics_port = free_port(), free_port(socket.SOCK_DGRAM), free_port()
    while metrics_port == http_port:  # each was free alone
        metrics_port = free_port()
    env = os.environ | {"FLEET_DATABASE_URL": database_dsn, "FLEET_LOG_FORMAT": "json", "FLEET_LOG_LEVEL": "INFO",
                        "FLEET_DB_POOL_MIN": "1", "FLEET_DB_POOL_MAX": "4", "FLEET_DB_SYSTEM_POOL_MAX": "10",
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.cli", "serve", "--coap-workers", "2", "--http-workers", "2",
        "--http-port", str(http_port), "--coap-port", str(coap_port), "--coaps-port", "0",
        "--metrics-port", str(metrics_port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
    running = NodeProcess(process)
    reader = asyncio.create_task(running.read_log())
    try:
        await running.until(lambda lines: len(running.events("CoAP listener ready")) == 2, "two CoAP listeners")
        yield running, http_port, coap_port, metrics_port
    finally:
        await ended(process)
        reader.cancel()


class HeldLevel(Resource):
    """A dimming level that takes writes only while `answering` is set: a device busy with a
    command as its worker dies."""

    def __init__(self, device: MiniDevice, answering: asyncio.Event) -> None:
        super().__init__(device, LEVEL, 100)
        self.answering = answering

    async def render_put(self, request):
        await self.answering.wait()
        return await super().render_put(request)


def light(endpoint: str, answering: asyncio.Event) -> MiniDevice:
    device = MiniDevice(endpoint)
    device.resources[LEVEL] = HeldLevel(device, answering)
    device.site.add_resource(tuple(LEVEL.strip("/").split("/")), device.resources[LEVEL])
    return device


def alive(pid: int) -> bool:
    """Running (a zombie has finished: its parent only has not reaped it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def until_succeeded(db, city, batch_id, status: str = "succeeded") -> None:
    """Until the batch's one command has `status`."""
    async with asyncio.timeout(30):
        while (await CommandService(db).get(city.principal, batch_id)).counts[status] != 1:
            await asyncio.sleep(0.1)


async def level_of(db, device_id) -> float | None:
    async with db.system_tx() as conn:
        return await conn.fetchval("select v_num from device_state where device_id = $1 and path = $2",
                                   device_id, LEVEL)


async def writes_reach(db, city, device: MiniDevice, device_id, value: int) -> None:
    batch = await CommandService(db).submit(city.principal, CommandRequest(
        Target(device_ids=(device_id,)), Operation.WRITE, LEVEL, value))
    await until_succeeded(db, city, batch.id)
    assert (LEVEL, value) in device.writes


async def test_a_node_of_worker_processes_survives_a_killed_coap_worker_and_stops_whole(db, node):
    running, http_port, coap_port, metrics_port = node
    city = await make_city(db, "seoul")
    ids = {}
    for n in range(DEVICES):
        record = await DeviceService(db).create_validated(city.principal, NewDevice(
            kind=DeviceKind.STREETLIGHT, endpoint=f"light-{n}", lat=37.56, lon=126.97))
        ids[f"light-{n}"] = record.id

    # REST through the shared HTTP socket, on either worker.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as client:
        for _ in range(4):
            answer = await client.get("/api/v1/devices", headers={"Authorization": f"Bearer {city.key}"})
            assert answer.status_code == 200 and len(answer.json()["items"]) == DEVICES
    # The node's metrics: every HTTP worker's requests, summed by the supervisor.
    async with httpx.AsyncClient(timeout=30) as client:
        scraped = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    listed = [line for line in scraped.splitlines()
              if line.startswith('fleet_http_requests_total{method="GET",route="/api/v1/devices"')]
    assert listed and listed[0].endswith(" 4.0"), listed

    devices, answering = [], asyncio.Event()
    answering.set()
    try:
        for n in range(DEVICES):
            device = light(f"light-{n}", answering)
            await device.start()
            devices.append(device)
            assert (await running.within(device.register(coap_port), "a Register")).code == Code.CREATED
            assert (await running.within(device.send(coap_port, READING), "a Send")).code == Code.CHANGED
        async with db.system_tx() as conn:
            nodes = dict(await conn.fetch("select endpoint, node from registrations"))
        slots = {node.rsplit("/", 1)[1] for node in nodes.values()}
        assert slots == {"coap-1", "coap-2"}, nodes

        # A device of coap-1 observed, and a command under way to it (sent, not answered yet) as
        # coap-1 is killed.
        of_slot = [d for d in devices if nodes[d.endpoint].endswith("/coap-1")]
        watched = ids[of_slot[0].endpoint]
        observe = await CommandService(db).submit(city.principal, CommandRequest(
            Target(device_ids=(watched,)), Operation.OBSERVE, LEVEL))
        await until_succeeded(db, city, observe.id)
        answering.clear()
        held = await CommandService(db).submit(city.principal, CommandRequest(
            Target(device_ids=(ids[of_slot[0].endpoint],)), Operation.WRITE, LEVEL, 7))
        await until_succeeded(db, city, held.id, status="sent")
        started = running.events("worker running", node=next(iter(nodes.values())).rsplit("/", 1)[0] + "/coap-1")
        old_pid = started[0]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        await running.until(lambda _: running.events("worker stopped unexpectedly", worker="coap-1"),
                            "log line of the killed worker")
        assert running.events("worker stopped unexpectedly", worker="coap-1")[0]["signal"] == "SIGKILL"
        new_pid = await running.until(
            lambda _: [line["pid"] for line in running.events("worker running") if line["node"].endswith("/coap-1")
                       and line["pid"] != old_pid], "restarted coap-1")
        await running.until(lambda _: len(running.events("CoAP listener ready")) == 3, "coap-1 listening again")

        # The new coap-1 sends what its predecessor left unanswered again, and it arrives.
        taken = await running.until(lambda _: running.events("took over from this node's previous process"),
                                    "the restarted worker's takeover")
        assert taken[0]["commands_released"] == 1 and taken[0]["observations"] == 1
        assert taken[0]["worker"] == "coap-1"
        answering.set()
        await until_succeeded(db, city, held.id)
        assert (LEVEL, 7) in of_slot[0].writes
        # ... and observes it again: a notification reaches the database.
        of_slot[0].resources[LEVEL].value = 33
        of_slot[0].resources[LEVEL].updated_state()
        async with asyncio.timeout(30):
            while await level_of(db, watched) != 33:
                await asyncio.sleep(0.1)

        # Its devices reach the new process on the same socket, and it sends them commands.
        for device in devices:
            assert (await running.within(device.send(coap_port, READING), "a Send after the restart")).code == Code.CHANGED
        await writes_reach(db, city, of_slot[0], ids[of_slot[0].endpoint], 42)
    finally:
        for device in devices:
            await device.stop()

    pids = [line["pid"] for line in running.events("worker running")]
    assert new_pid[0] in pids and len(pids) == 5
    running.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(40):
        assert await running.process.wait() == 0
    assert not [pid for pid in pids if alive(pid)]
