"""The node's event feed: streams woken per city, bursts coalesced, kinds filtered."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from fleet.access.models import Role
from fleet.errors import PermissionDenied, ValidationFailed
from fleet.events.models import ALARM_RAISED, DEVICE_STATUS_CHANGED, START, Event, EventFilter, Passed
from fleet.events.repository import EventRepository
from fleet.events.service import EventService
from tests.conftest import make_city


@pytest.mark.parametrize("text, kind, wanted", [
    (None, "alarm.raised", True),
    ("alarm", "alarm.cleared", True),
    ("alarm", "work_order.updated", False),
    ("work_order.created, device", "work_order.created", True),
    ("work_order.created, device", "work_order.updated", False),
    ("work_order.created, device", "device.status_changed", True),
])
def test_filter_takes_kinds_and_subjects(text, kind, wanted):
    assert EventFilter.parse(text).wants(kind) is wanted


@pytest.mark.parametrize("text", ["Alarm", "alarm.raised.twice", "alarm;drop", ",".join(["alarm"] * 51)])
def test_filter_refuses_what_is_neither_a_kind_nor_a_subject(text):
    with pytest.raises(ValueError):
        EventFilter.parse(text)


class CountingService(EventService):
    reads = 0

    async def _read(self, tenant_id, position):
        self.reads += 1
        return await super()._read(tenant_id, position)


@contextlib.asynccontextmanager
async def running(service: EventService):
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_burst_of_ten_thousand_events_is_read_in_pages_not_one_query_each(db):
    city = await make_city(db, "seoul")
    async with running(CountingService(db, page=500)) as service:
        opening = await service.open(city.principal, None)
        stream = service.follow(city.principal, opening.position)
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)  # subscribed before anything commits
        for commit in range(10):
            async with db.system_tx() as conn:
                await EventRepository(conn).append_many(
                    [(city.tenant_id, ALARM_RAISED, "alarm", f"a{commit}-{n}", {"n": commit * 1000 + n})
                     for n in range(1000)])
        seen = [(await asyncio.wait_for(first, 15)).payload["n"]]
        while len(seen) < 10_000:
            seen.append((await asyncio.wait_for(anext(stream), 15)).payload["n"])
        await stream.aclose()
    assert seen == list(range(10_000))
    # Ten commits, twenty pages: a wake-up per commit at most, plus the pages and a few polls.
    assert service.reads <= 60, service.reads
    assert service.streams == 0


async def test_streams_of_one_city_are_not_woken_by_another(db):
    seoul, busan = await make_city(db, "seoul"), await make_city(db, "busan")
    async with running(CountingService(db, keepalive_s=60)) as service:
        opening = await service.open(seoul.principal, None)
        stream = service.follow(seoul.principal, opening.position, EventFilter.parse("alarm"))
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        for _ in range(200):
            if service.listening:
                break
            await asyncio.sleep(0.05)
        reads = service.reads
        for n in range(5):
            async with db.system_tx() as conn:
                await EventRepository(conn).append(busan.tenant_id, ALARM_RAISED, "alarm", f"b{n}", {})
        async with db.system_tx() as conn:
            await EventRepository(conn).append(seoul.tenant_id, DEVICE_STATUS_CHANGED, "device", "d", {})
        passed = await asyncio.wait_for(pending, 15)
        await stream.aclose()
    # Seoul's device event was read and not wanted; Busan's five never woke the stream.
    assert isinstance(passed, Passed) and not isinstance(passed, Event)
    assert service.reads - reads <= 2


async def test_opening_checks_the_role_and_the_position(db):
    reporter = await make_city(db, "reports", Role.REPORTER)
    viewer = await make_city(db, "seoul", Role.VIEWER)
    service = EventService(db)
    with pytest.raises(PermissionDenied):
        await service.open(reporter.principal, None)
    with pytest.raises(ValidationFailed):
        await service.open(viewer.principal, "12")
    assert (await service.open(viewer.principal, "0-0")).reset is None


async def test_streams_at_the_same_position_share_one_read_of_the_log(db):
    """A commit wakes every stream of its city at once: a thousand tablets must not become a
    thousand queries. Streams elsewhere in the log read for themselves."""
    city = await make_city(db, "seoul")
    async with db.system_tx() as conn:
        await EventRepository(conn).append(city.tenant_id, DEVICE_STATUS_CHANGED, "device", "d", {"n": 1})
    service = EventService(db)
    queries = 0
    read_log = service._read_log

    async def counted(tenant_id, position):
        nonlocal queries
        queries += 1
        return await read_log(tenant_id, position)

    service._read_log = counted
    pages = await asyncio.gather(*(service._read(city.tenant_id, START) for _ in range(20)))
    assert queries == 1 and all([e.payload for e in page] == [{"n": 1}] for page in pages)
    [first] = pages[0]
    await asyncio.gather(service._read(city.tenant_id, START), service._read(city.tenant_id, first.position))
    assert queries == 3
