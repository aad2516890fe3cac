"""Bins with a fill history written straight into telemetry and device_state, for the fill
forecast's integration and API tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

from fleet.access.models import Principal
from fleet.db import Database
from fleet.registry.service import DeviceService

FILL = "/3435/0/2"


async def add_bin(db: Database, principal: Principal, endpoint: str, *, district: str | None = "Jongno",
                  waste_kind: str = "plastic", kind: str = "waste_bin") -> UUID:
    raw = {"kind": kind, "endpoint": endpoint, "lat": 37.57, "lon": 126.98, "district": district}
    if kind == "waste_bin":
        raw |= {"waste_kind": waste_kind, "capacity_litres": 240}
    device = await DeviceService(db).create(principal, raw)
    return device.id


async def write_fills(db: Database, tenant_id: UUID, device_id: UUID, start: datetime, hours: int,
                      fill_at: Callable[[int], float]) -> None:
    """Hourly readings fill_at(0..hours-1) from `start`; the last one is the device's state."""
    rows = [(tenant_id, device_id, start + timedelta(hours=h), FILL, float(fill_at(h))) for h in range(hours)]
    async with db.system_tx() as conn:
        await conn.executemany(
            "insert into telemetry (tenant_id, device_id, time, path, v_num) values ($1, $2, $3, $4, $5)", rows)
        last = rows[-1]
        await conn.execute(
            """insert into device_state (device_id, path, tenant_id, time, v_num) values ($1, $2, $3, $4, $5)
               on conflict (device_id, path) do update set time = excluded.time, v_num = excluded.v_num""",
            device_id, FILL, tenant_id, last[2], last[4])


def sawtooth(rate: float, empty_at: float = 70.0, start: float = 5.0) -> Callable[[int], float]:
    """A bin gaining `rate` points an hour, emptied to 2 % when it passes `empty_at`."""
    def fill(h: int) -> float:
        span = (empty_at - start) / rate
        cycle = h % int(span + 1)
        return round(start + rate * cycle if h < span + 1 else 2.0 + rate * cycle, 1)
    return fill
