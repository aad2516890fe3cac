"""A Send whose value PostgreSQL refuses gets 4.00 with a diagnostic; other devices' Sends commit."""

from __future__ import annotations

import asyncio

import aiocoap
import cbor2
from aiocoap import Code, Message

from tests.conftest import make_city
from tests.protocols.test_lwm2m_server import provision, register, uri


async def test_only_the_device_with_an_unstorable_value_is_refused(db, listener):
    city = await make_city(db, "seoul")
    good = await provision(db, city, "bin-good")
    bad = await provision(db, city, "bin-bad")
    clients = [await aiocoap.Context.create_client_context(transports=["udp6"]) for _ in range(2)]
    try:
        assert (await register(clients[0], listener, "bin-good")).code == Code.CREATED
        assert (await register(clients[1], listener, "bin-bad")).code == Code.CREATED
        fine = Message(code=Code.POST, uri=uri(listener, "/dp"),
                       payload=cbor2.dumps([{0: "/3435/0/2", 2: 61.0}]), content_format=112)
        # A string with U+0000: PostgreSQL's text cannot hold it.
        broken = Message(code=Code.POST, uri=uri(listener, "/dp"),
                         payload=cbor2.dumps([{0: "/3/0/0", 3: "maker\x00"}]), content_format=112)
        answers = await asyncio.gather(clients[0].request(fine).response, clients[1].request(broken).response)
        assert answers[0].code == Code.CHANGED
        assert answers[1].code == Code.BAD_REQUEST and answers[1].payload
        async with db.system_tx() as conn:
            counts = {r["device_id"]: r["n"] for r in await conn.fetch(
                "select device_id, count(*) n from telemetry group by device_id")}
        assert counts == {good.id: 1}, bad.id
    finally:
        for client in clients:
            await client.shutdown()
