"""The hourly sweep for stuck fill sensors, over real telemetry in PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.rules.service import StuckFillSweep
from fleet.alarms.settings import merged
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.telemetry.service import TelemetryWriter
from tests.conftest import make_city


async def bin_at(db, city, endpoint: str, lat: float, lon: float = 127.0):
    return (await DeviceService(db).create_validated(city.principal, NewDevice(
        kind=DeviceKind.WASTE_BIN, endpoint=endpoint, lat=lat, lon=lon))).id


async def test_a_bin_unchanged_while_its_neighbours_fill_is_stuck(db):
    city = await make_city(db, "seoul")
    now = datetime.now(UTC)
    stuck = await bin_at(db, city, "bin-stuck", 37.5000)
    moving = [await bin_at(db, city, f"bin-{n}", 37.5000 + n * 0.001) for n in (1, 2)]
    lonely = await bin_at(db, city, "bin-lonely", 37.6)  # 11 km away: nobody to compare with
    writer = TelemetryWriter(db)
    points = []
    for hours in (60, 30, 2):
        at = now - timedelta(hours=hours)
        points.append((city.tenant_id, stuck, at, "/3435/0/2", 55.0, None, None))
        points.append((city.tenant_id, lonely, at, "/3435/0/2", 20.0, None, None))
        for bin_id in moving:
            points.append((city.tenant_id, bin_id, at, "/3435/0/2", 80.0 - hours, None, None))
    await writer.write(points)
    await writer.close()
    collected: list[Finding] = []

    async def sink(findings: Sequence[Finding]) -> None:
        collected.extend(findings)

    await StuckFillSweep(db, sink).run(now)
    judged = {f.device_id: f for f in collected}
    assert judged[stuck].present is True and judged[stuck].type == AlarmType.FILL_SENSOR_STUCK
    assert "55 % for 3 days while 2 neighbours changed" in judged[stuck].detail
    assert all(judged[b].present is False for b in moving)
    assert lonely not in judged

    # A city that waits a day only looks at the last day: two reports 2 h apart are too few.
    collected.clear()

    async def one_day(tenant_id, device_ids):
        return {d: merged({"fill_stuck_days": 1}) for d in device_ids}

    await StuckFillSweep(db, sink, settings=one_day).run(now)
    assert collected == []


async def write_fills(db, city, now: datetime, fills: dict) -> None:
    """Each bin's fill (a function of hours ago) 60, 30 and 2 hours ago, committed."""
    writer = TelemetryWriter(db)
    await writer.write([(city.tenant_id, bin_id, now - timedelta(hours=hours), "/3435/0/2", fill(hours), None, None)
                        for hours in (60, 30, 2) for bin_id, fill in fills.items()])
    await writer.close()


async def swept(db, now: datetime) -> list[Finding]:
    collected: list[Finding] = []

    async def sink(findings: Sequence[Finding]) -> None:
        collected.extend(findings)

    await StuckFillSweep(db, sink).run(now)
    return collected


async def test_neighbours_count_across_the_grid_cells_and_only_within_reach(db):
    """The sweep pairs bins through a grid of 500 m cells: a neighbour in the next cell still
    counts; one 600 m away, in any cell, does not. Far north, where a degree of longitude is short."""
    city = await make_city(db, "oslo")
    now = datetime.now(UTC)
    row = math.floor(59.9 * 111320.0 / 500) * 500 / 111320.0  # a cell boundary of latitude
    east_400 = 400 / (111320.0 * math.cos(math.radians(row)))
    stuck = await bin_at(db, city, "bin-stuck", row - 0.0001, 10.75)
    near = [await bin_at(db, city, "bin-north", row + 0.0030, 10.75),               # 330 m, next cell
            await bin_at(db, city, "bin-east", row - 0.0001, 10.75 + east_400)]     # 400 m
    far = await bin_at(db, city, "bin-far", row - 0.0001, 10.75 + east_400 * 1.5)   # 600 m
    fills = {stuck: lambda hours: 55.0} | {bin_id: lambda hours: 80.0 - hours for bin_id in (*near, far)}
    await write_fills(db, city, now, fills)
    [judged] = [f for f in await swept(db, now) if f.device_id == stuck]
    assert judged.present is True and "while 2 neighbours changed" in judged.detail
