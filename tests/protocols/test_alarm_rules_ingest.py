"""Alarm rules on real UDP: a device's Send carrying a fault reaches the rules' sink as a
Finding once committed; a Send the server refuses (4.00) never does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import aiocoap
import cbor2
import pytest
from aiocoap import Code, Message

from fleet.alarms.evaluator import RuleEvaluator
from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.settings import merged
from protocols.lwm2m.listener import Listener, open_listener
from tests.conftest import make_city
from tests.protocols.test_commands import light
from tests.protocols.test_lwm2m_server import provision, register, uri


class Collected:
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.arrived = asyncio.Event()

    async def __call__(self, findings: Sequence[Finding]) -> None:
        self.findings.extend(findings)
        self.arrived.set()

    async def wait_for(self, device_id, type_: AlarmType, timeout: float = 10.0) -> Finding:
        async def first() -> Finding:
            while True:
                for found in self.findings:
                    if found.device_id == device_id and found.type == type_:
                        return found
                self.arrived.clear()
                await self.arrived.wait()
        return await asyncio.wait_for(first(), timeout)


@pytest.fixture
async def sink() -> Collected:
    return Collected()


@pytest.fixture
async def ruled_listener(db, sink) -> AsyncIterator[Listener]:
    async def settings(tenant_id, device_ids):
        return {device_id: merged({"overflow_fill_percent": 80}) for device_id in device_ids}

    rules = RuleEvaluator(db, sink, settings=settings)
    async with open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0), sweep_interval_s=0.2,
                             rules=rules) as running:
        yield running


def send(listener, pack) -> Message:
    return Message(code=Code.POST, uri=uri(listener, "/dp"), payload=cbor2.dumps(pack), content_format=112)


async def test_a_lamp_failure_in_a_send_reaches_the_sink(db, ruled_listener, sink, coap_client):
    city = await make_city(db, "seoul")
    record = await light(db, city, "light-1")
    assert (await register(coap_client, ruled_listener, "light-1")).code == Code.CREATED
    answer = await coap_client.request(send(ruled_listener, [
        {-2: "/3416/0/", 0: "5", 4: True}, {0: "3", 2: 100}])).response
    assert answer.code == Code.CHANGED
    found = await sink.wait_for(record.id, AlarmType.LAMP_FAILURE)
    assert (found.present, found.tenant_id) == (True, city.tenant_id)
    # The repaired lamp's next report says the condition is gone.
    answer = await coap_client.request(send(ruled_listener, [{-2: "/3416/0/", 0: "5", 4: False}])).response
    assert answer.code == Code.CHANGED
    for _ in range(100):
        if any(f.type == AlarmType.LAMP_FAILURE and not f.present for f in sink.findings):
            break
        await asyncio.sleep(0.05)
    assert [f.present for f in sink.findings if f.type == AlarmType.LAMP_FAILURE] == [True, False]


async def test_a_refused_send_yields_no_finding_and_the_citys_threshold_applies(db, ruled_listener, sink):
    city = await make_city(db, "seoul")
    good_bin, bad_bin = await provision(db, city, "bin-good"), await provision(db, city, "bin-bad")
    good = await aiocoap.Context.create_client_context(transports=["udp6"])
    bad = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        assert (await register(good, ruled_listener, "bin-good")).code == Code.CREATED
        assert (await register(bad, ruled_listener, "bin-bad")).code == Code.CREATED
        poisoned = [{-2: "/3435/0/", 0: "2", 2: 99.0}, {-2: "/3/0/", 0: "0", 3: "Ac\x00me"}]
        refused = await bad.request(send(ruled_listener, poisoned)).response
        assert refused.code == Code.BAD_REQUEST
        # 85 % is above this city's 80 % (the settings provider), below the default 90 %.
        answer = await good.request(send(ruled_listener, [{-2: "/3435/0/", 0: "2", 2: 85.0}])).response
        assert answer.code == Code.CHANGED
        found = await sink.wait_for(good_bin.id, AlarmType.BIN_OVERFLOW)
        assert (found.present, found.value) == (True, 85.0)
        assert not [f for f in sink.findings if f.device_id == bad_bin.id]
    finally:
        await good.shutdown()
        await bad.shutdown()
