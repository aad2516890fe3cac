"""Partition upkeep: days ahead are created, days past retention dropped, out-of-range rows kept."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from fleet.telemetry.service import TelemetryMaintenance


async def partitions(db) -> set[str]:
    async with db.system_tx() as conn:
        rows = await conn.fetch(
            """select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
               join pg_class p on p.oid = i.inhparent where p.relname = 'telemetry'""")
    return {r["relname"] for r in rows}


async def test_partitions_ahead_and_retention_behind(db):
    maintenance = TelemetryMaintenance(db, days_ahead=3, days_behind=1, retention_days=5)
    created, _ = await maintenance.run(today=date(2026, 1, 10))
    assert created == 5
    assert {"telemetry_20260109", "telemetry_20260113"} <= await partitions(db)
    assert (await maintenance.run(today=date(2026, 1, 10)))[0] == 0  # idempotent
    _, dropped = await maintenance.run(today=date(2026, 1, 16))
    assert dropped == 2  # the 9th and 10th are past five days of retention
    names = await partitions(db)
    assert "telemetry_20260109" not in names and "telemetry_20260111" in names


async def test_readings_outside_partitions_land_in_the_default(db):
    from tests.conftest import make_city
    from fleet.registry.models import DeviceKind, NewDevice
    from fleet.registry.service import DeviceService
    from fleet.telemetry.service import TelemetryWriter
    city = await make_city(db, "seoul")
    device = await DeviceService(db).create_validated(city.principal, NewDevice(
        kind=DeviceKind.WASTE_BIN, endpoint="clocky", lat=37.5, lon=127.0))
    writer = TelemetryWriter(db)
    far_future = datetime.now(UTC) + timedelta(days=4000)
    await writer.write([(city.tenant_id, device.id, far_future, "/3435/0/2", 10.0, None, None)])
    await writer.close()
    async with db.system_tx() as conn:
        # Partitions are reachable only through their parent; tableoid names where a row landed.
        assert await conn.fetchval("select count(*) from telemetry where device_id = $1 "
                                   "and tableoid = 'telemetry_default'::regclass", device.id) == 1
