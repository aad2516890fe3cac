"""Observations end on the device too, and notifications nobody holds are reset, over real UDP."""

from __future__ import annotations

import asyncio
import gc
import logging
from datetime import timedelta

import structlog

from fleet.commands.service import CommandService
from protocols.lwm2m.listener import open_listener
from tests.conftest import make_city
from tests.protocols.lwm2m.rawdevice import ACK, CREATED, GET, NON, OBSERVE, RST, SENML_JSON, RawDevice
from tests.protocols.lwm2m.test_negotiation import IDENTITY, eventually, level_stored
from tests.protocols.test_commands import light, wait_for_batch


async def observed_device(db, listener, endpoint: str):
    city = await make_city(db, "seoul")
    record = await light(db, city, endpoint)
    device = RawDevice(endpoint, (SENML_JSON,), dict(IDENTITY))
    await device.start()
    assert (await device.register(listener.port)).code == CREATED
    batch = await CommandService(db).observe(city.principal, record.id, "/3416/0/1", start=True)
    assert (await wait_for_batch(db, city, batch.id)).counts["succeeded"] == 1
    return city, record, device


async def test_cancelling_an_observation_deregisters_it_on_the_device(db, listener):
    city, record, device = await observed_device(db, listener, "watched")
    try:
        token = device.observers["/3416/0/1"]
        device.values["/3416/0/1"] = 40
        assert (await device.notify("/3416/0/1")).mtype == ACK
        await level_stored(db, record.id, 40)

        batch = await CommandService(db).observe(city.principal, record.id, "/3416/0/1", start=False)
        batch = await wait_for_batch(db, city, batch.id)
        assert batch.commands[0].result == {"observing": False, "device_told": True}
        deregistration = [r for r in device.requests if r.uint(OBSERVE) == 1]
        assert len(deregistration) == 1
        assert (deregistration[0].code, deregistration[0].token, deregistration[0].path) == \
            (GET, token, "/3416/0/1")
        assert device.observers == {}  # RFC 7641 §3.6: the device forgot it

        # A notification the device sends anyway (crossing the cancel) is refused, not stored.
        device.values["/3416/0/1"] = 5
        assert (await device.notify("/3416/0/1", token=token)).mtype == RST
        async with db.system_tx() as conn:
            assert await conn.fetchval("select v_num from device_state where device_id = $1 "
                                       "and path = '/3416/0/1'", record.id) == 40
            assert await conn.fetchval("select count(*) from observations where device_id = $1",
                                       record.id) == 0
    finally:
        device.stop()


async def test_registering_again_lets_the_previous_observation_go(db, listener):
    """A new registration ends the old one's observations (TS §6.4): Fleet observes again and
    holds nothing of the old one, so a notification on its token is reset."""
    _city, record, device = await observed_device(db, listener, "rebooted")
    try:
        old = device.observers["/3416/0/1"]
        assert (await device.register(listener.port)).code == CREATED
        await eventually(lambda: _true_when(device.observers.get("/3416/0/1") not in (None, old)))
        device.values["/3416/0/1"] = 70
        assert (await device.notify("/3416/0/1", token=old)).mtype == RST
        assert (await device.notify("/3416/0/1")).mtype == ACK
        await level_stored(db, record.id, 70)
    finally:
        device.stop()


async def test_a_device_that_ignores_the_cancel_gets_a_reset_for_its_next_notification(
        db, listener, monkeypatch):
    monkeypatch.setattr("protocols.lwm2m.observation.DEREGISTER_WAIT_S", 0.5)
    city, record, device = await observed_device(db, listener, "deaf")
    try:
        device.ignores_deregistration = True
        token = device.observers["/3416/0/1"]
        batch = await CommandService(db).observe(city.principal, record.id, "/3416/0/1", start=False)
        batch = await wait_for_batch(db, city, batch.id)
        assert batch.commands[0].result == {"observing": False, "device_told": False}
        assert (await device.notify("/3416/0/1", token=token)).mtype == RST
    finally:
        device.stop()


async def test_a_notification_for_an_unknown_token_is_reset_with_one_debug_line(db, listener, caplog):
    _city, _record, device = await observed_device(db, listener, "chatty")
    try:
        caplog.set_level(logging.DEBUG)
        with structlog.testing.capture_logs() as logs:
            confirmable = await device.notify("/3416/0/1", token=b"\x01\x02\x03\x04")
            non_confirmable = await device.notify("/3416/0/1", token=b"\x05\x06", mtype=NON)
        assert confirmable.mtype == RST and non_confirmable is not None and non_confirmable.mtype == RST
        resets = [entry for entry in logs if entry["event"] == "response for no request: reset"]
        assert [entry["log_level"] for entry in resets] == ["debug", "debug"]
        assert [r.getMessage() for r in caplog.records if "match" in r.getMessage()
                or "not recognized" in r.getMessage() or "unknown response" in r.getMessage()] == []
        # The observation that does exist is unaffected.
        assert (await device.notify("/3416/0/1")).mtype == ACK
    finally:
        device.stop()


async def test_a_notification_from_a_device_nobody_observes_is_reset(db, listener):
    """No observation at all on this node (e.g. after a restart): the device is told with RST."""
    city = await make_city(db, "seoul")
    await light(db, city, "orphan")
    device = RawDevice("orphan", (SENML_JSON,), dict(IDENTITY))
    await device.start()
    try:
        assert (await device.register(listener.port)).code == CREATED
        await eventually(lambda: _true_when(any(r.path == "/3/0" for r in device.requests)))
        assert (await device.notify("/3416/0/1", token=b"\xaa" * 8)).mtype == RST
    finally:
        device.stop()


async def _true_when(condition: bool) -> bool:
    return condition


async def test_a_node_stopping_lets_go_of_its_observations_quietly(db):
    """Stopping a node (`fleet demo`'s Ctrl-C) ends the observations it follows before the CoAP
    context shuts down: no "exception was never retrieved" for each one at ERROR level."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    unhandled = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context["message"]))
    try:
        async with open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0), sweep_interval_s=0.2) as listener:
            _city, _record, device = await observed_device(db, listener, "stopping")
            assert listener.dispatcher.observations
        device.stop()
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(previous)
    assert unhandled == []
