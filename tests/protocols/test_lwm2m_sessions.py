"""Sessions follow the database: rebinding, changes made by another listener, decommissioning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import aiocoap
import cbor2
import pytest
from aiocoap import Code, Message

from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from fleet.db import Database
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from protocols.coap.transport import udp_interface
from protocols.lwm2m.listener import open_listener
from tests.conftest import make_city
from tests.protocols.devices import MiniDevice
from tests.protocols.test_commands import wait_for_batch

PACK = cbor2.dumps([{-2: "/3435/0/", 0: "2", 2: 41.5}])


@pytest.fixture
async def second_listener(database_dsn):
    """Another listener with a pool of its own, as another process or node has."""
    db = await Database.connect(database_dsn, min_size=1, max_size=8)
    try:
        async with open_listener(db, "::", 0, node="second", expiry_grace=timedelta(0),
                                 sweep_interval_s=0.2) as running:
            yield running
    finally:
        await db.close()


@pytest.fixture
async def addresses() -> AsyncIterator[list[aiocoap.Context]]:
    """Client sockets, each one address a device may speak from (a NAT's rebinding)."""
    contexts = [await aiocoap.Context.create_client_context(transports=["udp6"]) for _ in range(2)]
    try:
        yield contexts
    finally:
        for context in contexts:
            await context.shutdown()


async def request(address: aiocoap.Context, listener, code: Code, path: str, payload: bytes = b"",
                  content_format: int | None = None) -> Message:
    message = Message(code=code, uri=f"coap://127.0.0.1:{listener.port}{path}", payload=payload)
    if content_format is not None:
        message.opt.content_format = content_format
    return await address.request(message).response


async def register(address, listener, endpoint: str, binding: str = "U") -> Message:
    return await request(address, listener, Code.POST, f"/rd?ep={endpoint}&lt=300&lwm2m=1.1&b={binding}",
                         b"</3435/0>", 40)


async def send(address, listener) -> Message:
    return await request(address, listener, Code.POST, "/dp", PACK, 112)


async def stored(db, device_id) -> int:
    async with db.system_tx() as conn:
        return await conn.fetchval("select count(*) from telemetry where device_id = $1", device_id)


async def peer_of_registration(db, device_id) -> tuple[str, int, bool]:
    async with db.system_tx() as conn:
        row = await conn.fetchrow("select address, port, secure from registrations where device_id = $1",
                                  device_id)
    return row["address"], row["port"], row["secure"]


async def until(condition, timeout_s: float = 10.0) -> None:
    """Waits for what another listener learns through LISTEN/NOTIFY (milliseconds, normally)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "the change never reached the other listener"
        await asyncio.sleep(0.01)


async def bin_device(db, city, endpoint: str):
    return await DeviceService(db).create_validated(
        city.principal, NewDevice(kind=DeviceKind.WASTE_BIN, endpoint=endpoint, lat=37.5, lon=127.0))


async def test_registering_again_from_a_new_address_silences_the_old_one(db, listener, addresses):
    city = await make_city(db, "seoul")
    device = await bin_device(db, city, "bin-rebound")
    old, new = addresses
    assert (await register(old, listener, "bin-rebound")).code == Code.CREATED
    assert (await send(old, listener)).code == Code.CHANGED
    assert (await register(new, listener, "bin-rebound")).code == Code.CREATED

    refused = await send(old, listener)
    assert refused.code == Code.FORBIDDEN, refused.payload
    assert await stored(db, device.id) == 1
    assert (await send(new, listener)).code == Code.CHANGED
    assert await stored(db, device.id) == 2


async def test_an_update_from_a_new_address_silences_the_old_one(db, listener, addresses):
    city = await make_city(db, "seoul")
    device = await bin_device(db, city, "bin-updated")
    old, new = addresses
    created = await register(old, listener, "bin-updated")
    assert (await send(old, listener)).code == Code.CHANGED
    location = "/".join(created.opt.location_path)
    assert (await request(new, listener, Code.POST, f"/{location}")).code == Code.CHANGED

    assert (await send(old, listener)).code == Code.FORBIDDEN
    assert (await send(new, listener)).code == Code.CHANGED
    assert await stored(db, device.id) == 2


async def test_changes_handled_by_another_listener_reach_this_ones_cache(db, listener, second_listener,
                                                                          addresses):
    city = await make_city(db, "seoul")
    device = await bin_device(db, city, "bin-roaming")
    old, new = addresses
    created = await register(old, listener, "bin-roaming")
    assert (await send(old, listener)).code == Code.CHANGED
    old_peer = await peer_of_registration(db, device.id)
    assert listener.server.sessions.get(old_peer) is not None

    # Re-registered through the other listener (another process or node, for all this one knows).
    assert (await register(new, second_listener, "bin-roaming")).code == Code.CREATED
    await until(lambda: listener.server.sessions.get(old_peer) is None)
    assert (await send(old, listener)).code == Code.FORBIDDEN
    assert (await send(new, second_listener)).code == Code.CHANGED

    # De-registered through the first: the second forgets it too.
    new_peer = await peer_of_registration(db, device.id)
    assert second_listener.server.sessions.get(new_peer) is not None
    location = (await register(new, second_listener, "bin-roaming")).opt.location_path
    assert (await request(new, listener, Code.DELETE, "/" + "/".join(location))).code == Code.DELETED
    await until(lambda: second_listener.server.sessions.get(new_peer) is None)
    assert (await send(new, second_listener)).code == Code.FORBIDDEN
    assert await stored(db, device.id) == 2
    assert created.code == Code.CREATED


async def test_expiry_swept_elsewhere_reaches_this_listeners_cache(db, listener, second_listener, addresses):
    city = await make_city(db, "seoul")
    device = await bin_device(db, city, "bin-expiring")
    assert (await register(addresses[0], second_listener, "bin-expiring")).code == Code.CREATED
    assert (await send(addresses[0], second_listener)).code == Code.CHANGED
    peer = await peer_of_registration(db, device.id)
    async with db.system_tx() as conn:
        await conn.execute("update registrations set expires_at = now() - interval '1 hour'")
    # Either listener's sweep may take it; both caches must drop it.
    await until(lambda: second_listener.server.sessions.get(peer) is None)
    assert (await send(addresses[0], second_listener)).code == Code.FORBIDDEN


async def test_decommissioning_takes_the_device_off_the_network(db, listener, second_listener, addresses):
    city = await make_city(db, "seoul")
    device = await bin_device(db, city, "bin-retired")
    address = addresses[0]
    created = await register(address, second_listener, "bin-retired", binding="UQ")
    assert (await send(address, second_listener)).code == Code.CHANGED
    peer = await peer_of_registration(db, device.id)
    # Queue mode: the command waits for the device's next Update, which will never be accepted.
    batch = await CommandService(db).submit(city.principal, CommandRequest(
        Target(device_ids=(device.id,)), Operation.EXECUTE, "/3435/0/9"))
    async with db.system_tx() as conn:
        await conn.execute(
            """insert into observations (device_id, path, tenant_id, node, active, established_at)
               values ($1, '/3435/0/2', $2, 'second', true, now())""", device.id, city.tenant_id)

    await DeviceService(db).decommission(city.principal, device.id)  # as DELETE /api/v1/devices/{id}

    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from registrations where device_id = $1", device.id) == 0
        assert await conn.fetchval("select count(*) from observations where device_id = $1", device.id) == 0
        command = await conn.fetchrow("select status, error from commands where batch_id = $1", batch.id)
    assert (command["status"], command["error"]) == ("cancelled", "cancelled: device decommissioned")
    await until(lambda: second_listener.server.sessions.get(peer) is None)

    refused = await send(address, second_listener)
    assert refused.code == Code.FORBIDDEN, refused.payload
    update = await request(address, second_listener, Code.POST, "/" + "/".join(created.opt.location_path))
    assert update.code == Code.NOT_FOUND
    again = await register(address, listener, "bin-retired")
    assert again.code == Code.FORBIDDEN
    assert await stored(db, device.id) == 1


async def test_a_lost_feed_of_changes_empties_the_cache_until_it_is_back(db, listener, addresses):
    city = await make_city(db, "seoul")
    device = await bin_device(db, city, "bin-cut-off")
    assert (await register(addresses[0], listener, "bin-cut-off")).code == Code.CREATED
    peer = await peer_of_registration(db, device.id)
    sessions = listener.server.sessions
    assert sessions.get(peer) is not None

    async with db.system_tx() as conn:
        assert await conn.fetchval(
            """select count(pg_terminate_backend(pid)) from pg_stat_activity
               where application_name = 'fleet-sessions' and datname = current_database()""") == 1
    await until(lambda: not sessions.following)
    assert sessions.get(peer) is None  # changes made meanwhile would be missed: nothing is trusted
    assert (await send(addresses[0], listener)).code == Code.CHANGED  # the database still answers
    await until(lambda: sessions.following)
    assert (await send(addresses[0], listener)).code == Code.CHANGED
    assert sessions.get(peer) is not None
    assert await stored(db, device.id) == 2


async def test_decommissioning_ends_the_observations_a_listener_follows(db, listener):
    city = await make_city(db, "seoul")
    record = await DeviceService(db).create_validated(city.principal, NewDevice(
        kind=DeviceKind.STREETLIGHT, endpoint="light-watched", lat=37.56, lon=126.97))
    device = MiniDevice("light-watched")
    device.add("/3416/0/1", 70)
    await device.start()
    try:
        assert (await device.register(listener.port)).code == Code.CREATED
        observe = await CommandService(db).submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.OBSERVE, "/3416/0/1"))
        observations = listener.dispatcher.observations
        await wait_for_batch(db, city, observe.id)
        observation, follower = observations[(record.id, "/3416/0/1")]

        await DeviceService(db).decommission(city.principal, record.id)
        await until(lambda: (record.id, "/3416/0/1") not in observations)
        # Really ended, not only forgotten: the follower stops and the token is let go, so the
        # device's next notification is answered with a Reset.
        await until(follower.done)
        assert observation.pending.observation.cancelled
        waiting = udp_interface(listener.context)._ctx.token_manager.outgoing_requests
        assert (observation.token, observation.response.remote) not in waiting
        batch = await CommandService(db).get(city.principal, observe.id)
        assert batch.counts["succeeded"] == 1  # what was done stays done; what was pending is cancelled
    finally:
        await device.stop()
