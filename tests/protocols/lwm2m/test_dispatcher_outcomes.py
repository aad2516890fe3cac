"""Command outcomes are kept until committed: a failed commit is retried, so nothing runs twice."""

from __future__ import annotations

import asyncio

import aiocoap.resource as resource
import asyncpg
from aiocoap import Code, Message

from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from tests.conftest import make_city
from fleet.objectmodel import Reading, ResourcePath
from protocols.lwm2m import senml
from tests.protocols.devices import MiniDevice
from tests.protocols.test_commands import light, wait_for_batch


async def test_an_outcome_whose_commit_fails_is_committed_later_and_the_command_not_sent_again(db, listener):
    city = await make_city(db, "seoul")
    record = await light(db, city, "light-outcome")
    device = MiniDevice("light-outcome")
    device.add("/3416/0/1", 100)
    await device.start()
    queue = listener.dispatcher.queue
    complete = queue.complete
    attempts: list[int] = []

    async def loses_the_database_once(outcomes):
        attempts.append(len(outcomes))
        if len(attempts) == 1:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        await complete(outcomes)

    queue.complete = loses_the_database_once
    try:
        assert (await device.register(listener.port)).code.is_successful()
        batch = await CommandService(db).submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.WRITE, "/3416/0/1", 42))
        batch = await wait_for_batch(db, city, batch.id)
        assert batch.counts["succeeded"] == 1, batch.counts
        assert attempts[:2] == [1, 1]  # the same outcome, kept and committed on the second try
        assert device.writes == [("/3416/0/1", 42)]
        for _ in range(100):  # said back at the next statement that reaches it, after a second
            if listener.writer.health.database_ok:
                break
            await asyncio.sleep(0.1)
        assert listener.writer.health.database_ok
        async with db.system_tx() as conn:
            row = await conn.fetchrow("select status, attempts from commands where device_id = $1",
                                      record.id)
        assert row["status"] == "succeeded" and row["attempts"] == 1
    finally:
        queue.complete = complete
        await device.stop()


async def test_outcomes_are_not_claimed_beyond_what_is_waiting_to_be_committed(db, listener):
    dispatcher = listener.dispatcher
    free = dispatcher.free_slots
    dispatcher._outcomes.extend([object()] * (2 * dispatcher.concurrency))  # all waiting for the database
    try:
        assert dispatcher.free_slots <= 0 < free
    finally:
        dispatcher._outcomes.clear()


class Unobservable(resource.Resource):
    """/5/0/3 of a device that answers an Observe as a plain read (RFC 7641 §2)."""

    async def render_get(self, request):
        pack = senml.encode_cbor([Reading(ResourcePath.parse("/5/0/3"), None, 0)])
        return Message(code=Code.CONTENT, payload=pack, content_format=112)


async def test_a_device_that_cannot_be_observed_is_asked_once(db, listener):
    """Its answer is final: the observation fails at once (the rollout then reads instead),
    not after every retry's backoff."""
    city = await make_city(db, "seoul")
    record = await light(db, city, "light-unobservable")
    device = MiniDevice("light-unobservable")
    device.add("/3416/0/1", 100)
    device.site.add_resource(("5", "0", "3"), Unobservable())
    await device.start()
    try:
        assert (await device.register(listener.port)).code.is_successful()
        batch = await CommandService(db).submit(city.principal, CommandRequest(
            Target(device_ids=(record.id,)), Operation.OBSERVE, "/5/0/3"))
        batch = await wait_for_batch(db, city, batch.id)
        assert batch.counts["failed"] == 1, batch.counts
        async with db.system_tx() as conn:
            row = await conn.fetchrow("select status, attempts, error from commands where device_id = $1",
                                      record.id)
        assert (row["status"], row["attempts"], row["error"]) == (
            "failed", 1, "device does not support observing this path")
    finally:
        await device.stop()
