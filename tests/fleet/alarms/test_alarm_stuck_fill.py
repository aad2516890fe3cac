"""The hourly sweep for stuck fill sensors, over real telemetry in PostgreSQL."""

from __future__ import annotations

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
