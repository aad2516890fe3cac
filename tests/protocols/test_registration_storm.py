"""A registration storm on real UDP: every device registered and read under a low follow-up budget,
held back rather than dropped, while Sends and commands of other devices keep being answered."""

from __future__ import annotations

import asyncio
import json
import os

from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from fleet.metrics import REGISTRATION_FOLLOWUPS
from protocols.lwm2m.listener import open_listener
from protocols.lwm2m.server import MAX_REGISTERING
from tests.conftest import make_city
from tests.protocols.lwm2m.rawdevice import (CHANGED, CON, CONTENT_FORMAT, CREATED, POST, SENML_JSON, TLV, URI_PATH,
                                             Datagram, RawDevice, uint)
from tests.protocols.test_commands import light, wait_for_batch

MAX_AGE = 14  # the CoAP option
DEVICES = 200
BUDGET_PER_S = 20  # follow-ups a second: the storm's reads take about ten seconds
IN_FLIGHT = 8


def device(n: int) -> RawDevice:
    return RawDevice(f"storm-{n:03d}", (SENML_JSON, TLV), {
        "/3/0/0": "Acme", "/3/0/1": "SL-7", "/3/0/2": f"SN-{n:05d}", "/3/0/3": "1.0.4", "/3311/0/5850": 1})


def counted(outcome: str) -> float:
    return REGISTRATION_FOLLOWUPS.labels(outcome)._value.get()


async def send(raw: RawDevice, value: float) -> Datagram:
    pack = json.dumps([{"n": "/3311/0/5851", "v": value}]).encode()
    return await raw.exchange(Datagram(CON, POST, raw.mid(), os.urandom(4),
                                       [(URI_PATH, b"dp"), (CONTENT_FORMAT, uint(SENML_JSON))], pack), timeout=60)


async def test_a_storm_is_registered_and_read_under_the_budget_and_sends_keep_flowing(db):
    city = await make_city(db, "seoul")
    for n in range(DEVICES):
        await light(db, city, f"storm-{n:03d}")
    veteran_record = await light(db, city, "veteran")
    storm = [device(n) for n in range(DEVICES)]
    veteran = device(999)
    veteran.endpoint = "veteran"
    async with open_listener(db, "::", 0, followups_per_s=BUDGET_PER_S, followups_in_flight=IN_FLIGHT) as listener:
        pacer = listener.pacer
        completed = counted("completed")
        for raw in [veteran, *storm]:
            await raw.start()
        try:
            assert (await veteran.register(listener.port)).code == CREATED
            # All at once: every Register is answered 2.01 once committed, whatever waits behind it.
            answers = await asyncio.gather(*(raw.register(listener.port, timeout=60) for raw in storm))
            assert [a.code for a in answers] == [CREATED] * DEVICES
            # Counted, not timed: with every device registered, most reads still wait their turn,
            # and no more run at once than the cap allows.
            assert pacer.waiting > 0 and pacer.running <= IN_FLIGHT
            read_so_far = sum(1 for raw in storm if any(r.path == "/3/0" for r in raw.requests))
            assert read_so_far < DEVICES

            # Meanwhile: Sends of devices whose reads wait are committed and acknowledged, and a
            # command to a device registered before the storm is claimed and delivered.
            batch = await CommandService(db).submit(city.principal, CommandRequest(
                Target(device_ids=(veteran_record.id,)), Operation.WRITE, "/3416/0/1", 30))
            sends = await asyncio.gather(*(send(raw, 40.0 + n) for n, raw in enumerate(storm[-20:])))
            assert [s.code for s in sends] == [CHANGED] * 20
            assert pacer.waiting > 0  # all of that while the storm's reads were still held back
            assert (await wait_for_batch(db, city, batch.id, timeout=60)).counts["succeeded"] == 1

            async with asyncio.timeout(120):
                while pacer.waiting or pacer.running:
                    assert pacer.running <= IN_FLIGHT
                    await asyncio.sleep(0.1)
            # One follow-up each, nobody dropped, and what was read is committed.
            assert counted("completed") - completed == DEVICES + 1
            assert all(any(r.path == "/3/0" for r in raw.requests) for raw in storm)
            async with db.system_tx() as conn:
                recorded = await conn.fetchval(
                    "select count(*) from devices where endpoint like 'storm-%' and manufacturer = 'Acme'"
                    " and model = 'SL-7' and firmware_version = '1.0.4' and status = 'online'")
                sent = await conn.fetchval("select count(*) from telemetry where path = '/3311/0/5851'")
            assert (recorded, sent) == (DEVICES, 20)
        finally:
            for raw in [veteran, *storm]:
                raw.stop()


async def test_registers_beyond_what_the_node_takes_get_5_03_with_max_age(db, listener):
    city = await make_city(db, "seoul")
    await light(db, city, "late-1")
    raw = device(1)
    raw.endpoint = "late-1"
    await raw.start()
    try:
        listener.server.max_registering = 0  # as if MAX_REGISTERING were waiting for their commit
        refused = await raw.register(listener.port)
        assert refused.code == 0xA3 and 5 <= refused.uint(MAX_AGE) <= 60, refused
        assert b"retry later" in refused.payload
        listener.server.max_registering = MAX_REGISTERING
        assert (await raw.register(listener.port)).code == CREATED
    finally:
        listener.server.max_registering = MAX_REGISTERING
        raw.stop()
