"""Two `fleet serve` nodes on one database, under load: the scheduler's leader killed and replaced
within 10 s; a stopped node's registrations, observations and commands taken over by the other;
a device that moves to another node (NAT rebinding) keeps working; nothing executed twice."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiocoap
import aiocoap.resource as resource
import asyncpg
import cbor2
import httpx
import pytest
from aiocoap import Code, Message

from fleet.campaigns.rollout_repository import origin
from fleet.commands.models import Operation
from fleet.commands.repository import OUTCOME_UNKNOWN, CommandRepository
from fleet.db import Database
from fleet.objectmodel import Reading, ResourcePath
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.collection.driving import RouteService
from fleet.workorders.changes import system_actor
from protocols.lwm2m import senml
from tests.conftest import City, free_port, make_city, migrated_database
from tests.fleet.collection.route_fixtures import seed_route
from tests.fleet.collection.test_driving_automation import _readings as fill_readings

pytestmark = pytest.mark.xdist_group("fleet-nodes")

# The bound for a new scheduler leader, measured from the kill (the product's: a
# follower tries the lock every 2 s, fleet.scheduling.leader.RETRY_S).
LEADER_TAKEOVER_S = 10.0
# The nodes' FLEET_NODE_TIMEOUT_S: a killed node's devices are the others' after this.
NODE_TIMEOUT_S = 3
# Generous bounds for what follows: a node timeout and a housekeeping round, then the exchanges.
TAKEOVER_S = 30.0
START_S = 90.0
ANSWER_S = 20.0
# With the node supervisor (api.node), each node runs its device edge in two worker processes.
WORKERS = ["--coap-workers", "2", "--http-workers", "1"] if importlib.util.find_spec("api.node") else []
COAP_WORKERS = 2 if WORKERS else 1

OBSERVED = "/3435/0/2"    # filling percentage: notified
WRITTEN = "/3435/0/1"     # container height: the commands' writes
REPORTED = "/3435/0/3"    # filling level: the devices' Sends (load)
REBOOT = "/3/0/4"
UPDATE = "/5/0/2"         # a firmware campaign's install step: once only
LINKS = b"</3/0>,</5/0>,</3435/0>"


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    """Wait for `check` to give something truthy (a condition in the database or a device)."""
    result = None
    try:
        async with asyncio.timeout(timeout_s):
            while not (result := await check()):
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout_s} s (last: {result!r})") from None
    return result


# -- nodes ------------------------------------------------------------------------------------------

@dataclass
class Node:
    """A `fleet serve` subprocess in a process group of its own (its workers, if any, with it)."""

    process: asyncio.subprocess.Process
    http_port: int
    coap_port: int
    lines: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task | None = None

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def owns(self, name: str | None) -> bool:
        """Whether a node name in the database (host:pid, host:pid/worker) is one of this node's processes."""
        if not name:
            return False
        pid = int(name.rsplit(":", 1)[1].split("/")[0])
        if pid == self.process.pid:
            return True
        try:
            return os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    async def read_log(self) -> None:
        ready = 0
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            ready += "CoAP listener ready" in line
            if ready >= COAP_WORKERS:
                self.ready.set()

    def tail(self) -> str:
        return "".join(self.lines[-30:])


class Cluster:
    def __init__(self, dsn: str, key: str) -> None:
        self.dsn, self.key = dsn, key
        self.nodes: list[Node] = []
        # (CoAP port, loop time) of each SIGKILL: what a device heard from a killed node before.
        self.killed: list[tuple[int, float]] = []

    @property
    def alive(self) -> list[Node]:
        return [node for node in self.nodes if node.alive]

    async def two(self) -> tuple[Node, Node]:
        while len(self.alive) < 2:
            await self.start()
        first, second = self.alive[:2]
        return first, second

    async def start(self) -> Node:
        http_port, coap_port = free_port(), free_port(socket.SOCK_DGRAM)
        env = os.environ | {"FLEET_DATABASE_URL": self.dsn, "FLEET_LOG_FORMAT": "json", "FLEET_LOG_LEVEL": "INFO",
                            "FLEET_DB_POOL_MIN": "1", "FLEET_DB_POOL_MAX": "6", "FLEET_METRICS_PORT": "0",
                            "FLEET_NODE_TIMEOUT_S": str(NODE_TIMEOUT_S)}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--coap-host", "::",
            "--http-port", str(http_port), "--coap-port", str(coap_port), "--coaps-port", "0", *WORKERS,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
        node = Node(process, http_port, coap_port)
        node.reader = asyncio.create_task(node.read_log())
        self.nodes.append(node)
        try:
            async with asyncio.timeout(START_S):
                await node.ready.wait()
                async with self.api(node) as client:
                    while (await client.get("/readyz")).status_code != 200:
                        await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError("fleet serve did not start:\n" + node.tail()) from None
        return node

    def api(self, node: Node | None = None) -> httpx.AsyncClient:
        node = node or self.alive[0]
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}", timeout=ANSWER_S,
                                 headers={"Authorization": f"Bearer {self.key}"})

    async def kill(self, node: Node) -> float:
        """SIGKILL to the node and its workers at once, as a machine losing power; when, on the loop's clock."""
        os.killpg(node.process.pid, signal.SIGKILL)
        killed_at = asyncio.get_running_loop().time()
        self.killed.append((node.coap_port, killed_at))
        await node.process.wait()
        return killed_at

    async def stop(self, node: Node) -> int:
        """SIGTERM to the node (its supervisor, when it has workers): it drains and exits."""
        node.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(40):
                return await node.process.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)  # anything left behind

    async def close(self) -> None:
        for node in self.alive:
            node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(40):
                    await node.process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            await node.process.wait()
            if node.reader is not None:
                node.reader.cancel()


# -- devices ----------------------------------------------------------------------------------------

class Executable(resource.Resource):
    def __init__(self, device: Device, path: str) -> None:
        super().__init__()
        self.device, self.path = device, path

    async def render_post(self, request):
        self.device.heard(self.device.executed, (self.path, request.remote.sockaddr[1]))
        gate = self.device.gates.get(self.path)
        if gate is not None:
            await gate.wait()
        return Message(code=Code.CHANGED)


class _Observers(set):
    def remove(self, observation) -> None:  # aiocoap's cancellation of one replaced already
        self.discard(observation)


class Value(resource.ObservableResource):
    def __init__(self, device: Device, path: str, value: float) -> None:
        super().__init__()
        self.device, self.path, self.value = device, path, value

    async def render_get(self, request):
        pack = senml.encode_cbor([Reading(ResourcePath.parse(self.path), None, self.value)])
        return Message(code=Code.CONTENT, payload=pack, content_format=112)

    async def render_put(self, request):
        value = int(request.payload.decode())
        self.device.heard(self.device.written, (value, request.remote.sockaddr[1]))
        self.value = value
        return Message(code=Code.CHANGED)

    async def add_observation(self, request, serverobservation):
        # One observation of a path, as LwM2M clients keep one per server and path (Wakaama): a
        # node observing again replaces the one before. (aiocoap, notifying a node that died
        # along with the others, often stops notifying them all.)
        self._observations = _Observers()
        await super().add_observation(request, serverobservation)

    def set(self, value: float) -> None:
        self.value = value
        self.updated_state()


class Device:
    """A simulated device with its own UDP socket (its address), counting what it is told to do:
    writes by value and executes by path, each with the CoAP port of the node that sent it."""

    def __init__(self, endpoint: str, device_id: uuid.UUID) -> None:
        self.endpoint, self.device_id = endpoint, device_id
        self.written: list[tuple[int, int, float]] = []
        self.executed: list[tuple[str, int, float]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.changed = asyncio.Event()
        self.site = resource.Site()
        self.values = {path: Value(self, path, 0) for path in (OBSERVED, WRITTEN)}
        for path, value in self.values.items():
            self.site.add_resource(tuple(path.strip("/").split("/")), value)
        for path in (REBOOT, UPDATE):
            self.site.add_resource(tuple(path.strip("/").split("/")), Executable(self, path))
        self.context: aiocoap.Context | None = None
        self.location = ""
        self.port = 0  # the node it talks to

    def heard(self, log: list, what: tuple) -> None:
        log.append((*what, asyncio.get_running_loop().time()))
        self.changed.set()

    async def open(self) -> None:
        self.context = await aiocoap.Context.create_server_context(self.site, bind=("127.0.0.1", 0),
                                                                   transports=["udp6"])

    async def rebind(self) -> None:
        """A NAT gives the device a new address: the old socket is gone, a new one talks on."""
        await self.context.shutdown()
        await self.open()

    async def close(self) -> None:
        for gate in self.gates.values():
            gate.set()
        if self.context is not None:
            await self.context.shutdown()

    async def request(self, code: Code, path: str, payload: bytes = b"", content_format: int | None = None,
                      port: int | None = None) -> Message:
        message = Message(code=code, uri=f"coap://127.0.0.1:{port or self.port}{path}", payload=payload)
        if content_format is not None:
            message.opt.content_format = content_format
        async with asyncio.timeout(ANSWER_S):
            return await self.context.request(message).response

    async def register(self, node: Node) -> None:
        self.port = node.coap_port
        answer = await self.request(Code.POST, f"/rd?ep={self.endpoint}&lt=300&lwm2m=1.1&b=U", LINKS, 40)
        assert answer.code == Code.CREATED, answer
        self.location = "/" + "/".join(answer.opt.location_path)

    async def update(self, node: Node) -> Message:
        self.port = node.coap_port
        return await self.request(Code.POST, self.location)

    async def send(self, value: int, port: int | None = None) -> Message:
        return await self.request(Code.POST, "/dp", cbor2.dumps([{-2: REPORTED.rsplit("/", 1)[0] + "/", 0: "3",
                                                                   2: value}]), 112, port)

    async def until_heard(self, log: list, what: tuple, description: str) -> None:
        async def heard() -> bool:
            if not any(entry[:len(what)] == what for entry in log):
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self.changed.wait()
            return any(entry[:len(what)] == what for entry in log)
        await until(heard, TAKEOVER_S, f"{self.endpoint}: {description}")


def doubles(device: Device, killed: list[tuple[int, float]]) -> list[tuple]:
    """What the device was told twice, but for the one thing a SIGKILL may repeat: a command the
    killed node had sent and whose answer it never recorded, sent again by the node taking over."""
    found = []
    for log in (device.written, device.executed):
        by_what: dict[Any, list[tuple]] = {}
        for entry in log:
            by_what.setdefault(entry[0], []).append(entry)
        for what, entries in by_what.items():
            if len(entries) == 1:
                continue
            first, *rest = entries
            repeated_after_kill = len(rest) == 1 and rest[0][1] != first[1] and any(
                port == first[1] and at < rest[0][2] for port, at in killed)
            if not repeated_after_kill:
                found.append((device.endpoint, what, entries))
    return found


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def nodes_dsn(server_dsn: str, template_database: str) -> AsyncIterator[str]:
    """One database for the module's nodes (they outlive a test)."""
    async with migrated_database(server_dsn, template_database) as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def nodes_db(nodes_dsn: str) -> AsyncIterator[Database]:
    database = await Database.connect(nodes_dsn, min_size=1, max_size=4)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture(scope="module")
async def city(nodes_db: Database) -> City:
    return await make_city(nodes_db, "nodeville")


@pytest.fixture(scope="module")
async def cluster(nodes_dsn: str, city: City) -> AsyncIterator[Cluster]:
    nodes = Cluster(nodes_dsn, city.key)
    try:
        await nodes.two()
        yield nodes
    finally:
        await nodes.close()


class Fleet:
    """The city's simulated devices; every one of them is checked for doubles at the end."""

    def __init__(self, db: Database, city: City) -> None:
        self.db, self.city = db, city
        self.devices: list[Device] = []
        self.numbers = itertools.count(1)

    async def new(self, node: Node) -> Device:
        endpoint = f"nodes-bin-{next(self.numbers)}"
        created = await DeviceService(self.db).create_validated(self.city.principal, NewDevice(
            kind=DeviceKind.WASTE_BIN, endpoint=endpoint, lat=37.5, lon=127.0))
        device = Device(endpoint, created.id)
        self.devices.append(device)
        await device.open()
        await device.register(node)
        return device


@pytest.fixture(scope="module")
async def fleet(nodes_db: Database, city: City) -> AsyncIterator[Fleet]:
    devices = Fleet(nodes_db, city)
    try:
        yield devices
    finally:
        for device in devices.devices:
            await device.close()


@pytest.fixture(scope="module")
async def load(cluster: Cluster, fleet: Fleet) -> AsyncIterator[list[Device]]:
    """Devices that Send all along to whichever node is up, and writes queued for them all along
    through whichever node's API is up: what every scenario runs under."""
    first, second = await cluster.two()
    devices = [await fleet.new(first if n % 2 else second) for n in range(4)]

    async def chatter(device: Device) -> None:
        for value in itertools.count():
            with contextlib.suppress(Exception):  # a node going down under it: the next one answers
                await device.send(value % 500, port=cluster.alive[value % len(cluster.alive)].coap_port)
            await asyncio.sleep(0.2)

    async def commands() -> None:
        for value in itertools.count(1):
            with contextlib.suppress(Exception):
                async with cluster.api() as client:
                    await client.post("/api/v1/commands", json={
                        "target": {"device_ids": [str(devices[value % len(devices)].device_id)]},
                        "operation": "write", "path": WRITTEN, "value": value})
            await asyncio.sleep(0.25)

    tasks = [asyncio.create_task(chatter(device)) for device in devices] + [asyncio.create_task(commands())]
    try:
        yield devices
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(autouse=True)
async def nothing_twice(load: list[Device], fleet: Fleet, cluster: Cluster) -> AsyncIterator[None]:
    yield
    found = [double for device in fleet.devices for double in doubles(device, cluster.killed)]
    assert not found, f"told twice: {found}"


# -- the database's view ----------------------------------------------------------------------------

async def leadership(db: Database) -> asyncpg.Record:
    async with db.system_tx() as conn:
        return await conn.fetchrow("select node, epoch from scheduler_leadership")


async def registered_node(db: Database, device: Device) -> str | None:
    async with db.system_tx() as conn:
        return await conn.fetchval("select node from registrations where device_id = $1", device.device_id)


async def observation(db: Database, device: Device) -> asyncpg.Record | None:
    async with db.system_tx() as conn:
        return await conn.fetchrow("select node, active, established_at from observations "
                                   "where device_id = $1 and path = $2", device.device_id, OBSERVED)


async def state(db: Database, device: Device, path: str) -> float | None:
    async with db.system_tx() as conn:
        return await conn.fetchval("select v_num from device_state where device_id = $1 and path = $2",
                                   device.device_id, path)


async def database_now(db: Database):
    async with db.system_tx() as conn:
        return await conn.fetchval("select now()")


async def observe(cluster: Cluster, db: Database, device: Device, node: Node) -> None:
    async with cluster.api() as client:
        answer = await client.post(f"/api/v1/devices/{device.device_id}/observations", json={"path": OBSERVED})
    assert answer.status_code == 202, answer.text

    async def observed_by_node() -> bool:
        row = await observation(db, device)
        return row is not None and row["active"] and node.owns(row["node"])
    await until(observed_by_node, ANSWER_S, f"{device.endpoint} observed by its node")


async def write(cluster: Cluster, device: Device, value: int) -> None:
    async with cluster.api() as client:
        answer = await client.post("/api/v1/commands", json={
            "target": {"device_ids": [str(device.device_id)]}, "operation": "write", "path": WRITTEN,
            "value": value})
    assert answer.status_code == 202, answer.text


async def served_by(cluster: Cluster, db: Database, device: Device, node: Node, since, value: int) -> None:
    """`node` now serves the device: its registration, its observation made again (after `since`)
    and notifying, a command reaching it from there, its Sends taken there."""
    async def registration_moved() -> bool:
        return node.owns(await registered_node(db, device))
    await until(registration_moved, TAKEOVER_S, f"{device.endpoint}'s registration taken over")

    async def observed_again() -> bool:
        row = await observation(db, device)
        return row is not None and node.owns(row["node"]) and row["established_at"] > since
    await until(observed_again, TAKEOVER_S, f"{device.endpoint} observed again")
    device.values[OBSERVED].set(value)  # only a notification tells the node now

    async def notified() -> bool:
        return await state(db, device, OBSERVED) == value
    await until(notified, TAKEOVER_S, f"{device.endpoint}'s notification stored")
    await write(cluster, device, 1000 + value)
    await device.until_heard(device.written, (1000 + value, node.coap_port), "write through the new node")
    device.port = node.coap_port  # its traffic now reaches the node that took it over
    assert (await device.send(value)).code == Code.CHANGED


# -- scenarios --------------------------------------------------------------------------------------

async def test_the_leader_killed_is_replaced_within_10_s_and_its_devices_taken_over(cluster, nodes_db, fleet):
    first, second = await cluster.two()

    async def led_by_one_of_them() -> asyncpg.Record | None:
        row = await leadership(nodes_db)
        return row if row is not None and (first.owns(row["node"]) or second.owns(row["node"])) else None
    led = await until(led_by_one_of_them, START_S, "a scheduler leader")
    leader, follower = (first, second) if first.owns(led["node"]) else (second, first)
    devices = [await fleet.new(leader), await fleet.new(leader), await fleet.new(follower)]
    for device in devices:
        await observe(cluster, nodes_db, device, leader if device is not devices[-1] else follower)
    route, stop = await emptied_stop(nodes_db, fleet.city)
    since = await database_now(nodes_db)

    await cluster.kill(leader)
    async with asyncio.timeout(LEADER_TAKEOVER_S):  # measured from the kill: the bound
        while not ((row := await leadership(nodes_db))["epoch"] > led["epoch"] and follower.owns(row["node"])):
            await asyncio.sleep(0.05)

    # The new leader's first pass completes the stop whose bin emptied (the old one's may have):
    # once, whoever did it.
    async def stop_done() -> bool:
        async with nodes_db.system_tx() as conn:
            return await conn.fetchval("select status from collection_stops where id = $1", stop) == "done"
    await until(stop_done, TAKEOVER_S, "the emptied bin's stop completed")

    for number, device in enumerate(devices[:2]):
        await served_by(cluster, nodes_db, device, follower, since, 50 + number)
    # The follower's own device never moved, nor stopped being observed.
    assert follower.owns(await registered_node(nodes_db, devices[2]))
    devices[2].values[OBSERVED].set(77)
    await until(lambda: _equals(state(nodes_db, devices[2], OBSERVED), 77), ANSWER_S, "the follower's device")
    async with nodes_db.system_tx() as conn:
        updates = await conn.fetchval("select count(*) from events where kind = 'route.stop_updated'")
        emptyings = await conn.fetchval("select count(*) from bin_emptyings where stop_id = $1", stop)
    assert (updates, emptyings) == (1, 1), route


async def emptied_stop(db: Database, city: City) -> tuple[uuid.UUID, uuid.UUID]:
    """A route under way whose first bin has just been emptied (its fill dropped): its stop is
    the scheduler's to complete (fleet.collection.automation.complete_by_fill)."""
    now = datetime.now(UTC)
    seeded = await seed_route(db, city.tenant_id, bins=2, starts_at=now - timedelta(hours=1), prefix="nodes")
    async with db.tenant_tx(city.tenant_id) as conn:
        crew = await conn.fetchval("insert into crews (tenant_id, name) values ($1, 'Night team') returning id",
                                   city.tenant_id)
        await conn.execute("update collection_plans set created_at = $1", now - timedelta(hours=12))
    await RouteService(db).assign(system_actor(city.tenant_id), seeded.route_id, crew)
    await fill_readings(db, city.tenant_id, seeded.bin_ids[0],
                        [(now - timedelta(hours=2), 85.0), (now - timedelta(minutes=10), 6.0)])
    return seeded.route_id, seeded.stop_ids[0]


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def test_a_node_stopped_cleanly_hands_its_devices_over_at_once(cluster, nodes_db, fleet):
    staying, stopping = await cluster.two()
    devices = [await fleet.new(stopping), await fleet.new(stopping)]
    for device in devices:
        await observe(cluster, nodes_db, device, stopping)
    # A command waiting for it when the node stops: a reboot held by the device until let go.
    held = devices[0]
    held.gates[REBOOT] = asyncio.Event()
    async with cluster.api(staying) as client:
        answer = await client.post("/api/v1/commands", json={
            "target": {"device_ids": [str(held.device_id)]}, "operation": "execute", "path": REBOOT})
    assert answer.status_code == 202, answer.text
    await held.until_heard(held.executed, (REBOOT, stopping.coap_port), "the reboot")
    since = await database_now(nodes_db)

    stopped = asyncio.create_task(cluster.stop(stopping))
    await asyncio.sleep(0)
    held.gates[REBOOT].set()  # answered while the node drains: recorded, not sent again
    assert await stopped == 0, stopping.tail()
    async with nodes_db.system_tx() as conn:
        beats = await conn.fetch("select name, heartbeat_at from fleet_nodes")
    # It said it left ('-infinity', or gone once adopted): no heartbeat of its own to wait out.
    assert not [row for row in beats if stopping.owns(row["name"]) and row["heartbeat_at"].year > 1], beats

    for number, device in enumerate(devices):
        await served_by(cluster, nodes_db, device, staying, since, 60 + number)
    async with nodes_db.system_tx() as conn:
        status = await conn.fetchval("select status from commands where device_id = $1 and path = $2",
                                     held.device_id, REBOOT)
    assert status == "succeeded"
    assert [entry[:2] for entry in held.executed] == [(REBOOT, stopping.coap_port)]


async def test_a_device_moving_to_another_node_keeps_working(cluster, nodes_db, fleet):
    here, there = await cluster.two()
    device = await fleet.new(here)
    await observe(cluster, nodes_db, device, here)
    assert (await device.send(1)).code == Code.CHANGED
    since = await database_now(nodes_db)

    await device.rebind()  # NAT rebinding, and the new mapping reaches the other node
    assert (await device.update(there)).code == Code.CHANGED
    assert (await device.send(2)).code == Code.CHANGED
    await served_by(cluster, nodes_db, device, there, since, 70)
    await write(cluster, device, 3)
    await device.until_heard(device.written, (3, there.coap_port), "a second write through the new node")
    assert not [entry for entry in device.written if entry[1] == here.coap_port]


async def test_a_firmware_update_under_way_when_its_node_is_killed_is_never_sent_again(cluster, nodes_db, fleet):
    survivor, doomed = await cluster.two()
    device = await fleet.new(doomed)
    await observe(cluster, nodes_db, device, doomed)
    device.gates[UPDATE] = asyncio.Event()  # installing: the answer comes too late for its node
    async with nodes_db.system_tx() as conn:
        # As a campaign's install step is queued (fleet.campaigns.rollout_repository.insert_steps).
        campaign_id = uuid.uuid4()
        batch = await CommandRepository(conn).insert_batch(
            fleet.city.tenant_id, Operation.EXECUTE, UPDATE, None, {"campaign_id": str(campaign_id)},
            [device.device_id], None, origin(campaign_id), datetime.now(UTC) + timedelta(hours=1))
    await device.until_heard(device.executed, (UPDATE, doomed.coap_port), "the Update")
    since = await database_now(nodes_db)

    await cluster.kill(doomed)

    async def outcome_unknown() -> asyncpg.Record | None:
        async with nodes_db.system_tx() as conn:
            row = await conn.fetchrow("select status, error from commands where device_id = $1 and path = $2",
                                      device.device_id, UPDATE)
        return row if row["status"] != "sent" else None
    row = await until(outcome_unknown, TAKEOVER_S, "the Update's outcome")
    assert (row["status"], row["error"]) == ("failed", OUTCOME_UNKNOWN)
    await served_by(cluster, nodes_db, device, survivor, since, 80)
    device.gates[UPDATE].set()
    assert [entry[:2] for entry in device.executed] == [(UPDATE, doomed.coap_port)], batch
