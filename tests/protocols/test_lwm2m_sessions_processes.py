"""Two `fleet coap` processes sharing one UDP port (SO_REUSEPORT): a change handled by one
reaches the other's sessions, so an address that no longer speaks for a device is refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiocoap
import cbor2
import pytest
from aiocoap import Code, Message

from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import free_port, make_city

PACK = cbor2.dumps([{-2: "/3435/0/", 0: "2", 2: 41.5}])
# Client sockets; the kernel spreads them over the two processes by their port, and each step
# below takes fresh ones (an address a device still holds would speak for that device).
ADDRESSES = 32


@dataclass
class CoapProcess:
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def node(self) -> str:
        return f"{socket.gethostname()}:{self.process.pid}"

    async def read_log(self) -> None:
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if "CoAP listener ready" in line:
                self.ready.set()


@pytest.fixture
async def coap_processes(database_dsn) -> AsyncIterator[tuple[int, list[CoapProcess]]]:
    port = free_port(socket.SOCK_DGRAM)
    env = os.environ | {"FLEET_DATABASE_URL": database_dsn, "FLEET_LOG_FORMAT": "json",
                        "FLEET_LOG_LEVEL": "INFO", "FLEET_DB_POOL_MIN": "1", "FLEET_DB_POOL_MAX": "6",
                        "FLEET_METRICS_PORT": "0"}  # two processes; no port of their own to give
    processes, readers = [], []
    try:
        for _ in range(2):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "api.cli", "coap", "--host", "::", "--coap-port", str(port),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
            running = CoapProcess(process)
            processes.append(running)
            readers.append(asyncio.create_task(running.read_log()))
        for running in processes:
            try:
                await asyncio.wait_for(running.ready.wait(), 60)
            except TimeoutError:
                raise AssertionError("fleet coap did not start:\n" + "".join(running.lines[-20:])) from None
        yield port, processes
    finally:
        for running in processes:
            with contextlib.suppress(ProcessLookupError):
                running.process.send_signal(signal.SIGTERM)
        for running in processes:
            try:
                await asyncio.wait_for(running.process.wait(), 20)
            except TimeoutError:
                running.process.kill()
                await running.process.wait()
        for reader in readers:
            reader.cancel()


@pytest.fixture
async def addresses() -> AsyncIterator[list[aiocoap.Context]]:
    contexts = [await aiocoap.Context.create_client_context(transports=["udp6"]) for _ in range(ADDRESSES)]
    try:
        yield contexts
    finally:
        for context in contexts:
            await context.shutdown()


class Device:
    """Requests as a device would make them, from whichever address it has at the moment."""

    def __init__(self, port: int, endpoint: str) -> None:
        self.port, self.endpoint = port, endpoint
        self.location = ""

    async def request(self, address, code: Code, path: str, payload: bytes = b"",
                      content_format: int | None = None) -> Message:
        message = Message(code=code, uri=f"coap://127.0.0.1:{self.port}{path}", payload=payload)
        if content_format is not None:
            message.opt.content_format = content_format
        return await address.request(message).response

    async def register(self, address) -> Message:
        answer = await self.request(address, Code.POST, f"/rd?ep={self.endpoint}&lt=300&lwm2m=1.1&b=U",
                                    b"</3435/0>", 40)
        if answer.code == Code.CREATED:
            self.location = "/" + "/".join(answer.opt.location_path)
        return answer

    async def send(self, address) -> Message:
        return await self.request(address, Code.POST, "/dp", PACK, 112)

    async def until_forgotten_at(self, address, timeout_s: float = 10.0) -> None:
        """Until the process this address reaches no longer holds its session.

        Probed with an undecodable Send, which stores nothing either way: 4.00 while a session
        is cached, 4.03 once it is gone (the database has no registration at that address).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            answer = await self.request(address, Code.POST, "/dp", b"\xff", 112)
            if answer.code == Code.FORBIDDEN:
                return
            assert answer.code == Code.BAD_REQUEST, answer
            assert loop.time() < deadline, "the other process never heard of the change"
            await asyncio.sleep(0.02)


async def nodes_of(db, port: int, addresses) -> dict[str, list]:
    """Which process each address reaches, learnt from the node a probe registration names."""
    probe = Device(port, "probe")
    reached: dict[str, list] = {}
    for address in addresses:
        assert (await probe.register(address)).code == Code.CREATED
        async with db.system_tx() as conn:
            node = await conn.fetchval("select node from registrations where endpoint = 'probe'")
        reached.setdefault(node, []).append(address)
    assert (await probe.request(addresses[0], Code.DELETE, probe.location)).code == Code.DELETED
    return reached


async def stored(db, device_id) -> int:
    async with db.system_tx() as conn:
        return await conn.fetchval("select count(*) from telemetry where device_id = $1", device_id)


async def test_a_stale_address_is_refused_by_both_processes(db, coap_processes, addresses):
    port, processes = coap_processes
    city = await make_city(db, "seoul")
    devices = DeviceService(db)
    for endpoint in ("probe", "bin-0", "bin-1", "bin-gone", "bin-retired"):
        await devices.create_validated(city.principal, NewDevice(
            kind=DeviceKind.WASTE_BIN, endpoint=endpoint, lat=37.5, lon=127.0))
    reached = await nodes_of(db, port, addresses)
    assert sorted(reached) == sorted(p.node for p in processes), "the port is not shared by both"
    first, second = (reached[p.node] for p in processes)
    assert min(len(first), len(second)) >= 4, "too few addresses reach one process; run again"

    # NAT rebinding, each process in turn holding the stale session.
    for number, (here, there) in enumerate([(first, second), (second, first)]):
        device = Device(port, f"bin-{number}")
        record_id = await device_id(db, device.endpoint)
        old, new = here[number], there[number]
        assert (await device.register(old)).code == Code.CREATED
        assert (await device.send(old)).code == Code.CHANGED
        assert (await device.register(new)).code == Code.CREATED  # handled by the other one
        await device.until_forgotten_at(old)
        assert (await device.send(old)).code == Code.FORBIDDEN
        assert (await device.send(new)).code == Code.CHANGED
        assert await stored(db, record_id) == 2

    # De-registered through one process: the other forgets it.
    gone = Device(port, "bin-gone")
    assert (await gone.register(first[2])).code == Code.CREATED
    assert (await gone.send(first[2])).code == Code.CHANGED
    assert (await gone.request(second[2], Code.DELETE, gone.location)).code == Code.DELETED
    await gone.until_forgotten_at(first[2])
    assert (await gone.send(first[2])).code == Code.FORBIDDEN

    # Decommissioned through the API's process: both forget it, and it cannot come back.
    retired = Device(port, "bin-retired")
    retired_id = await device_id(db, retired.endpoint)
    assert (await retired.register(second[3])).code == Code.CREATED
    assert (await retired.send(second[3])).code == Code.CHANGED
    await devices.decommission(city.principal, retired_id)
    await retired.until_forgotten_at(second[3])
    assert (await retired.send(second[3])).code == Code.FORBIDDEN
    assert (await retired.request(second[3], Code.POST, retired.location)).code == Code.NOT_FOUND
    for address in (first[3], second[3]):
        assert (await retired.register(address)).code == Code.FORBIDDEN
    assert await stored(db, retired_id) == 1


async def device_id(db, endpoint: str):
    async with db.system_tx() as conn:
        return await conn.fetchval("select id from devices where endpoint = $1", endpoint)
