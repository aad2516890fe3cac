"""Finished commands are published with their outcome: one event per command for small batches,
one per batch (when its last command finishes, exactly once) for large ones."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

import fleet.commands.repository as commands_repository
from fleet.commands.models import Operation, Outcome
from fleet.commands.repository import CommandRepository
from tests.conftest import blocked_by, make_city


async def _batch(db, city, devices: int, *, expires_in: dt.timedelta = dt.timedelta(hours=1)) -> tuple:
    async with db.system_tx() as conn:
        await conn.execute("""insert into devices (tenant_id, kind, endpoint, lat, lon)
            select $1, 'streetlight', 'light-' || g, 37.5, 126.9 from generate_series(1, $2) g""",
                           city.tenant_id, devices)
        ids = [r["id"] for r in await conn.fetch("select id from devices order by endpoint")]
        batch_id, commands = await CommandRepository(conn).insert_batch_with_ids(
            city.tenant_id, Operation.WRITE, "/3416/0/1", 30, {}, ids, None, "lighting",
            dt.datetime.now(dt.UTC) + expires_in)
        await conn.execute("update commands set status = 'sent', attempts = 1 where batch_id = $1", batch_id)
    return batch_id, [commands[i] for i in ids]


async def _complete(db, outcomes) -> None:
    async with db.system_tx() as conn:
        await CommandRepository(conn).complete(outcomes, max_attempts=3, backoff_base_s=1.0)


async def _events(db) -> list:
    async with db.system_tx() as conn:
        return await conn.fetch("select kind, subject_type, subject_id, payload from events order by id")


async def test_each_command_of_a_small_batch_is_an_event_once_it_finishes(db):
    city = await make_city(db, "seoul")
    batch_id, (first, second) = await _batch(db, city, 2)
    await _complete(db, [Outcome(first, True, None), Outcome(second, False, None, "timeout", retryable=True)])
    events = await _events(db)
    assert [(e["kind"], e["subject_id"]) for e in events] == [("command.finished", str(first))]
    assert events[0]["payload"]["status"] == "succeeded"
    assert events[0]["payload"]["batch_id"] == str(batch_id)  # the retried one is not finished


async def test_a_large_batch_is_one_event_when_its_last_command_finishes(db, monkeypatch):
    monkeypatch.setattr(commands_repository, "EVENT_PER_COMMAND_UP_TO", 2)
    city = await make_city(db, "seoul")
    batch_id, commands = await _batch(db, city, 3)
    await _complete(db, [Outcome(commands[0], True, None), Outcome(commands[1], False, None, "4.04",
                                                                   retryable=False)])
    assert await _events(db) == []
    await _complete(db, [Outcome(commands[2], True, None)])
    [event] = await _events(db)
    assert (event["kind"], event["subject_type"], event["subject_id"]) == ("command.finished", "batch", str(batch_id))
    assert event["payload"]["counts"] == {"succeeded": 2, "failed": 1}
    assert event["payload"]["device_count"] == 3


async def test_two_nodes_finishing_a_batch_together_publish_it_once(db, monkeypatch):
    monkeypatch.setattr(commands_repository, "EVENT_PER_COMMAND_UP_TO", 1)
    city = await make_city(db, "seoul")
    _, (first, second) = await _batch(db, city, 2)
    async with db.pool.acquire() as one, db.pool.acquire() as other:
        one_tx = one.transaction()
        await one_tx.start()
        await CommandRepository(one).complete([Outcome(first, True, None)], max_attempts=3, backoff_base_s=1)

        async def finish_other() -> None:
            async with other.transaction():
                await CommandRepository(other).complete([Outcome(second, True, None)], max_attempts=3,
                                                        backoff_base_s=1)

        racing = asyncio.create_task(finish_other())
        # The race itself: the other node waits on the batch this one holds, then decides.
        await blocked_by(one, racing)
        await one_tx.commit()
        await racing
    assert [e["subject_type"] for e in await _events(db)] == ["batch"]


@pytest.mark.parametrize("devices, subjects", [(2, ["command", "command"]), (3, ["batch"])])
async def test_expired_commands_are_published_the_same_way(db, monkeypatch, devices, subjects):
    monkeypatch.setattr(commands_repository, "EVENT_PER_COMMAND_UP_TO", 2)
    city = await make_city(db, "seoul")
    batch_id, _ = await _batch(db, city, devices, expires_in=dt.timedelta(seconds=-1))
    async with db.system_tx() as conn:
        await conn.execute("update commands set status = 'queued' where batch_id = $1", batch_id)
        assert await CommandRepository(conn).expire() == devices
    events = await _events(db)
    assert [e["subject_type"] for e in events] == subjects
    assert all(e["payload"].get("status", "expired") == "expired" for e in events)


async def test_cancelled_commands_are_published_too(db):
    city = await make_city(db, "seoul")
    batch_id, (first, second) = await _batch(db, city, 2)
    async with db.system_tx() as conn:
        await conn.execute("update commands set status = 'queued' where id = $1", first)
    async with db.tenant_tx(city.tenant_id) as conn:  # an operator's cancel, behind the wall
        assert await CommandRepository(conn).cancel_batch(city.tenant_id, batch_id) == 1
    async with db.tenant_tx(city.tenant_id) as conn:  # the device is decommissioned
        device_id = await conn.fetchval("select device_id from commands where id = $1", second)
        assert await CommandRepository(conn).end_for_device(city.tenant_id, device_id, "decommissioned") == 1
    events = await _events(db)
    assert [(e["subject_id"], e["payload"]["status"]) for e in events] == [
        (str(first), "cancelled"), (str(second), "cancelled")]
