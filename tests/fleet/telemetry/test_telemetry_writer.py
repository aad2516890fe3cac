"""TelemetryWriter: group commit whose futures resolve only after COMMIT, on held connections."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.telemetry.service import TelemetryMaintenance, TelemetryWriter
from tests.conftest import make_city


@pytest.fixture
async def device(db):
    await TelemetryMaintenance(db).run()
    city = await make_city(db, "seoul")
    created = await DeviceService(db).create_validated(
        city.principal, NewDevice(kind=DeviceKind.WASTE_BIN, endpoint="writer-1", lat=37.5, lon=127.0))
    return city.tenant_id, created.id


def points(device, count: int, start: datetime) -> list[tuple]:
    tenant_id, device_id = device
    return [(tenant_id, device_id, start + timedelta(seconds=n), "/3435/0/2", float(n), None, None)
            for n in range(count)]


async def rows(db, device) -> int:
    async with db.system_tx() as conn:
        return await conn.fetchval("select count(*) from telemetry where device_id = $1", device[1])


async def test_concurrent_writes_are_committed_when_their_futures_resolve(db, device):
    writer = TelemetryWriter(db)
    start = datetime.now(UTC)
    try:
        futures = [writer.submit(points(device, 5, start + timedelta(minutes=n))) for n in range(40)]
        await asyncio.gather(*futures)
        assert await rows(db, device) == 200
        async with db.system_tx() as conn:
            latest = await conn.fetchrow("select time, v_num from device_state where device_id = $1",
                                         device[1])
        assert latest["time"] == start + timedelta(minutes=39, seconds=4) and latest["v_num"] == 4.0
        assert writer.committed_points == 200 and writer.batches < 40
    finally:
        await writer.close()


async def test_empty_write_resolves_at_once(db, device):
    writer = TelemetryWriter(db)
    try:
        assert writer.submit([]).done()
        await writer.write([])
    finally:
        await writer.close()


async def test_a_failed_batch_fails_its_callers_and_the_writer_goes_on(db, device):
    writer = TelemetryWriter(db, flushers=1)
    try:
        unknown_device = (device[0], device[0], datetime.now(UTC), "/3/0/9", 1.0, None, None)
        with pytest.raises(Exception):  # device_state references devices: a foreign key violation
            await writer.submit([unknown_device])
        await writer.write(points(device, 3, datetime.now(UTC)))
        assert await rows(db, device) == 3
    finally:
        await writer.close()


async def test_close_waits_for_the_batch_being_committed(db, device):
    writer = TelemetryWriter(db, flushers=1)
    future = writer.submit(points(device, 1000, datetime.now(UTC)))
    await asyncio.sleep(0)  # the flusher takes the batch
    await writer.close()
    assert future.done() and future.exception() is None
    assert await rows(db, device) == 1000
