"""The event log's order: read in (xid, id) order from finished transactions only, so a reader
never skips an event that commits late, never sees one twice, never sees a rolled-back one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from fleet.events.models import DEVICE_STATUS_CHANGED, START, Position
from fleet.events.repository import EventRepository
from fleet.events.service import EVENTS_CHANNEL, publish
from tests.conftest import Explained, make_city


@pytest.mark.parametrize("token", ["", "12", "12-", "-3", "a-1", "1-b", "１２-3", "1-2-3", "1 -2",
                                   f"{2**63}-1", f"1-{2**63}", "9" * 61 + "-1"])
def test_malformed_positions_are_refused(token):
    with pytest.raises(ValueError):
        Position.parse(token)


def test_positions_round_trip_as_tokens():
    assert Position.parse(Position(812, 5).token()) == Position(812, 5)
    assert Position.parse(" 0-0 ") == START


async def _event(conn: asyncpg.Connection, tenant_id, n: int) -> None:
    await publish(conn, tenant_id, DEVICE_STATUS_CHANGED, "device", f"d{n}", {"n": n})


async def _read_all(db, tenant_id, position: Position = START, limit: int = 100) -> list[int]:
    async with db.tenant_tx(tenant_id, readonly=True) as conn:
        return [e.payload["n"] for e in await EventRepository(conn).after(tenant_id, position, limit)]


async def test_a_transaction_that_began_first_and_commits_last_is_read_after_it_commits(db):
    city = await make_city(db, "seoul")
    async with db.pool.acquire() as early, db.pool.acquire() as late:
        early_tx = early.transaction()
        await early_tx.start()
        await early.fetchval("select pg_current_xact_id()")  # its xid is the older one
        async with late.transaction():
            await _event(late, city.tenant_id, 2)
        # Committed, but an older transaction might still write before it: held back.
        assert await _read_all(db, city.tenant_id) == []
        await _event(early, city.tenant_id, 1)
        await early_tx.commit()
    assert await _read_all(db, city.tenant_id) == [1, 2]


async def test_a_reader_that_already_passed_on_still_gets_the_late_event(db):
    city = await make_city(db, "seoul")
    async with db.system_tx() as conn:
        await _event(conn, city.tenant_id, 0)
    async with db.pool.acquire() as early, db.pool.acquire() as late:
        early_tx = early.transaction()
        await early_tx.start()
        await early.fetchval("select pg_current_xact_id()")
        async with late.transaction():
            await _event(late, city.tenant_id, 2)
        async with db.tenant_tx(city.tenant_id, readonly=True) as conn:
            seen = await EventRepository(conn).after(city.tenant_id, START, 100)
        assert [e.payload["n"] for e in seen] == [0]
        await _event(early, city.tenant_id, 1)
        await early_tx.commit()
    assert await _read_all(db, city.tenant_id, seen[-1].position) == [1, 2]


async def test_a_rolled_back_event_never_appears_and_holds_nothing_back(db):
    city = await make_city(db, "seoul")
    async with db.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await _event(conn, city.tenant_id, 1)
        await tx.rollback()
    async with db.system_tx() as conn:
        await _event(conn, city.tenant_id, 2)
    assert await _read_all(db, city.tenant_id) == [2]


async def test_paging_resumes_without_gaps_or_duplicates(db):
    city = await make_city(db, "seoul")
    for n in range(7):
        async with db.system_tx() as conn:
            await _event(conn, city.tenant_id, n)
            if n % 3 == 0:
                await _event(conn, city.tenant_id, n + 100)  # two in one transaction
    seen, position = [], START
    while True:
        async with db.tenant_tx(city.tenant_id, readonly=True) as conn:
            page = await EventRepository(conn).after(city.tenant_id, position, 2)
        if not page:
            break
        seen += [e.payload["n"] for e in page]
        position = page[-1].position
    assert seen == [0, 100, 1, 2, 3, 103, 4, 5, 6, 106]
    async with db.system_tx() as conn:  # payloads are JSON objects in the table, not strings
        assert await conn.fetchval("select bool_and(payload ? 'n') from events")


async def test_the_horizon_is_after_everything_committed_and_before_what_comes(db):
    city = await make_city(db, "seoul")
    async with db.system_tx() as conn:
        await _event(conn, city.tenant_id, 1)
    async with db.tenant_tx(city.tenant_id, readonly=True) as conn:
        horizon = await EventRepository(conn).horizon()
    async with db.system_tx() as conn:
        await _event(conn, city.tenant_id, 2)
    assert await _read_all(db, city.tenant_id, horizon) == [2]
    assert Position.parse(horizon.token()) == horizon


async def test_each_city_reads_only_its_own_and_writes_only_its_own(db):
    seoul, busan = await make_city(db, "seoul"), await make_city(db, "busan")
    async with db.tenant_tx(seoul.tenant_id) as conn:
        await _event(conn, seoul.tenant_id, 1)
    async with db.system_tx() as conn:
        await _event(conn, busan.tenant_id, 2)
    assert await _read_all(db, seoul.tenant_id) == [1]
    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        # Asking for the other city under this one's wall finds nothing.
        assert await EventRepository(conn).after(busan.tenant_id, START, 10) == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.tenant_tx(seoul.tenant_id) as conn:
            await _event(conn, busan.tenant_id, 3)


async def test_one_notification_per_city_and_statement_carries_the_transaction(db):
    seoul, busan = await make_city(db, "seoul"), await make_city(db, "busan")
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with db.pool.acquire() as listener:
        def hear(*args) -> None:
            heard.put_nowait(args[-1])

        await listener.add_listener(EVENTS_CHANNEL, hear)
        async with db.system_tx() as conn:
            xid = await conn.fetchval("select pg_current_xact_id()::text::bigint")
            await EventRepository(conn).append_many(
                [(seoul.tenant_id, DEVICE_STATUS_CHANGED, "device", f"d{n}", {"n": n}) for n in range(50)]
                + [(busan.tenant_id, DEVICE_STATUS_CHANGED, "device", "d", {"n": 0})])
        async with db.tenant_tx(seoul.tenant_id) as conn:  # the app login may notify too
            await _event(conn, seoul.tenant_id, 99)
        payloads = {await asyncio.wait_for(heard.get(), 10) for _ in range(3)}
        await listener.remove_listener(EVENTS_CHANNEL, hear)
    assert f"{seoul.tenant_id} {xid}" in payloads and f"{busan.tenant_id} {xid}" in payloads
    assert heard.empty()


async def test_subject_filter_reads_only_those_subjects(db):
    city = await make_city(db, "seoul")
    async with db.system_tx() as conn:
        for n in range(4):
            await _event(conn, city.tenant_id, n)
    async with db.tenant_tx(city.tenant_id, readonly=True) as conn:
        found = await EventRepository(conn).after(city.tenant_id, START, 10,
                                                  subjects=[("device", "d1"), ("device", "d3"), ("alarm", "d0")])
    assert [e.payload["n"] for e in found] == [1, 3]


async def test_pruning_forgets_old_events_and_marks_readers_from_before_as_pruned(db):
    seoul, busan = await make_city(db, "seoul"), await make_city(db, "busan")
    async with db.system_tx() as conn:
        for n in range(3):
            await _event(conn, seoul.tenant_id, n)
        await _event(conn, busan.tenant_id, 9)
    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        first, second, third = await EventRepository(conn).after(seoul.tenant_id, START, 10)
    async with db.system_tx() as conn:
        await conn.execute("update events set at = at - interval '10 days' where id = any($1::bigint[])",
                           [first.id, second.id])
        assert await EventRepository(conn).prune_before(datetime.now(UTC) - timedelta(days=7), batch=1) == 1
        assert await EventRepository(conn).prune_before(datetime.now(UTC) - timedelta(days=7)) == 1
        assert await EventRepository(conn).prune_before(datetime.now(UTC) - timedelta(days=7)) == 0
    assert await _read_all(db, seoul.tenant_id) == [2]
    async with db.tenant_tx(seoul.tenant_id, readonly=True) as conn:
        repo = EventRepository(conn)
        assert await repo.resumable(seoul.tenant_id, START) == (True, False)
        assert await repo.resumable(seoul.tenant_id, first.position) == (True, False)
        assert await repo.resumable(seoul.tenant_id, second.position) == (False, False)
        assert await repo.resumable(seoul.tenant_id, Position(2**62, 0)) == (False, True)
    async with db.tenant_tx(busan.tenant_id, readonly=True) as conn:
        assert await EventRepository(conn).resumable(busan.tenant_id, START) == (False, False)


async def test_reading_from_far_behind_walks_the_index_and_sorts_nothing(db):
    """A stream resuming from an old position reads one page along events_order; it must not
    sort every event of the city (as it did when ORDER BY named the bigint output column)."""
    city = await make_city(db, "seoul")
    async with db.system_tx() as conn:
        for n in range(50):
            await _event(conn, city.tenant_id, n)
    async with db.tenant_tx(city.tenant_id, readonly=True) as conn:
        await conn.execute("set local enable_seqscan = off")
        await conn.execute("set local enable_sort = off")
        explained = Explained(conn)
        await EventRepository(explained).after(city.tenant_id, START, 10)
        await EventRepository(explained).after(city.tenant_id, START, 10, subjects=[("device", "d1")])
    for plan in explained.plans:
        assert "events_order" in plan or "events_subject" in plan, plan
        assert "Sort" not in plan, plan
