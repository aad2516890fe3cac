"""The CoAP listener as one runnable component: socket, LwM2M server, group commit, expiry sweep."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import aiocoap
import structlog

from fleet.db import Database
from fleet.db.availability import database_away
from fleet.registrations.service import RegistrationService
from fleet.supervision import Health, Supervisor
from fleet.telemetry.service import TelemetryMaintenance, TelemetryWriter
from protocols.coap import transport
from fleet.commands.service import CommandQueue
from protocols.lwm2m.dispatcher import IN_FLIGHT, Dispatcher
from protocols.lwm2m.downlink import DeviceClient, DeviceInfoReader
from protocols.lwm2m.server import LwM2MServer

log = structlog.get_logger("fleet.coap")

EXPIRY_GRACE = timedelta(seconds=30)
SWEEP_INTERVAL_S = 5.0
PARTITION_MAINTENANCE_S = 3600.0
# On stopping, how long requests already taken get to be committed and answered (the REST
# API's grace is the same, api.runtime.GRACE_S).
DRAIN_GRACE_S = 5.0


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Listener:
    context: aiocoap.Context
    server: LwM2MServer
    writer: TelemetryWriter
    client: DeviceClient
    dispatcher: Dispatcher
    port: int


@contextlib.asynccontextmanager
async def open_listener(db: Database, host: str, port: int, *, node: str | None = None,
                        expiry_grace: timedelta = EXPIRY_GRACE,
                        sweep_interval_s: float = SWEEP_INTERVAL_S,
                        in_flight: int = IN_FLIGHT, health: Health | None = None) -> AsyncIterator[Listener]:
    transport.install()
    node = node or node_name()
    health = health or Health()
    maintenance = TelemetryMaintenance(db)
    await maintenance.run()
    writer = TelemetryWriter(db, health=health)
    registrations = RegistrationService(db, node)
    server = LwM2MServer(registrations, writer)
    context = await aiocoap.Context.create_server_context(server, bind=(host, port), transports=["udp6"])
    transport.enlarge_receive_buffer(context)
    client = DeviceClient(context)
    dispatcher = Dispatcher(db, CommandQueue(db, node), client, server, concurrency=in_flight,
                            health=health)
    info_reader = DeviceInfoReader(client, registrations, server.store)

    async def on_registered(registration, session, *, update: bool = False) -> None:
        try:
            await info_reader(registration, session, update=update)
            await dispatcher.device_awake(registration, session, update=update)
        except Exception as exc:  # noqa: BLE001 - a task of its own: nobody else would hear of it
            if database_away(exc):
                health.database_lost(exc)  # done again at the device's next Register or Update
            else:
                log.exception("after-registration work failed", endpoint=registration.endpoint)

    server.on_registered = on_registered
    bound_port = transport.udp_sockets(context)[0].getsockname()[1]
    supervisor = Supervisor(health)
    supervisor.start("registration-sweep", lambda: _sweep(registrations, server, expiry_grace,
                                                          sweep_interval_s, health))
    supervisor.start("command-dispatcher", dispatcher.run)
    supervisor.start("partition-maintenance", lambda: _maintain_partitions(maintenance, PARTITION_MAINTENANCE_S))
    log.info("CoAP listener ready", host=host, port=bound_port, node=node)
    try:
        yield Listener(context, server, writer, client, dispatcher, bound_port)
    finally:
        await supervisor.stop()
        await server.drain(DRAIN_GRACE_S)
        client.close()
        await server.close()
        await context.shutdown()
        await writer.close()


async def _sweep(registrations: RegistrationService, server: LwM2MServer, grace: timedelta,
                 interval_s: float, health: Health) -> None:
    """Lifetimes are stored as expiry times, so this is correct across restarts and nodes."""
    while True:
        try:
            expired = await registrations.expire(grace)
            if expired:
                server.forget_devices(set(expired))
        except Exception as exc:
            if not database_away(exc):
                raise  # our bug: the supervisor logs it once and restarts the sweep
            health.database_lost(exc)  # retried on the next tick
        await asyncio.sleep(interval_s)


async def _maintain_partitions(maintenance: TelemetryMaintenance, interval_s: float) -> None:
    """Daily partitions ahead, retention behind; idempotent, so every node may run it."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await maintenance.run()
        except Exception as exc:  # noqa: BLE001 - retried on the next tick; days of partitions are ahead
            if not database_away(exc):
                log.exception("telemetry partition maintenance failed")


async def run_coap(db: Database, host: str, port: int, *, in_flight: int = IN_FLIGHT,
                   health: Health | None = None) -> None:
    async with open_listener(db, host, port, in_flight=in_flight, health=health):
        await asyncio.Event().wait()
