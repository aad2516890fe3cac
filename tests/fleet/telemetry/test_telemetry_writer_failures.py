"""TelemetryWriter under failure: a culprit's value, a bounded backlog, a database that is away."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from fleet.errors import Unavailable, ValidationFailed
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.supervision import Health
from fleet.telemetry.service import TelemetryMaintenance, TelemetryWriter
from tests.conftest import make_city
from tests.fleet.telemetry.test_telemetry_writer import points, rows


@pytest.fixture
async def devices(db):
    await TelemetryMaintenance(db).run()
    made = []
    for slug in ("seoul", "busan"):
        city = await make_city(db, slug)
        for n in range(2):
            created = await DeviceService(db).create_validated(city.principal, NewDevice(
                kind=DeviceKind.WASTE_BIN, endpoint=f"{slug}-bin-{n}", lat=37.5, lon=127.0))
            made.append((city.tenant_id, created.id))
    return made


async def test_a_value_the_database_refuses_fails_only_its_own_caller(db, devices):
    writer = TelemetryWriter(db)
    now = datetime.now(UTC)
    culprit = devices[1]
    try:
        # Submitted without yielding: one batch, one transaction, from two cities.
        good = [writer.submit(points(device, 3, now)) for device in devices if device != culprit]
        bad = writer.submit([(*culprit, now, "/3/0/0", None, "maker\x00", None)])
        await asyncio.gather(*good)
        with pytest.raises(ValidationFailed, match="cannot be stored"):
            await bad
        for device in devices:
            assert await rows(db, device) == (0 if device == culprit else 3)
        assert writer.committed_points == 9
    finally:
        await writer.close()


async def test_writers_other_than_sends_wait_for_room(db, devices):
    writer = TelemetryWriter(db, max_backlog_points=10)
    now = datetime.now(UTC)
    try:
        queued = writer.submit(points(devices[0], 20, now))
        assert writer.backed_up
        waiting = asyncio.create_task(writer.write(points(devices[1], 5, now)))
        await asyncio.sleep(0)
        # The second producer holds its points back instead of growing the backlog.
        assert writer.waiting_points <= 20
        await asyncio.gather(queued, waiting)
        assert await rows(db, devices[0]) == 20 and await rows(db, devices[1]) == 5
    finally:
        await writer.close()


async def test_while_the_database_is_away_writes_are_refused_until_a_probe_finds_it(db, devices):
    health = Health()
    writer = TelemetryWriter(db, health=health)
    try:
        health.database_lost(ConnectionRefusedError())
        assert writer.backed_up
        with pytest.raises(Unavailable):
            await writer.write(points(devices[0], 1, datetime.now(UTC)))
        # The database is in fact there: a flusher's probe says so within about a second.
        while not health.database_ok:
            await asyncio.sleep(0.05)
        await writer.write(points(devices[0], 1, datetime.now(UTC)))
        assert await rows(db, devices[0]) == 1
    finally:
        await writer.close()
