"""A city with a streetlight and a way to raise alarms on it, for the work-order domain tests."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import pytest

from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import make_city


async def raise_alarm(db, tenant_id: UUID, device_id: UUID, type: str, severity: str, first_seen: datetime,
                      status: str = "active") -> UUID:
    async with db.system_tx() as conn:
        return await conn.fetchval(
            """insert into alarms (tenant_id, device_id, type, severity, status, first_seen, last_seen)
               values ($1, $2, $3, $4, $5, $6, $6) returning id""",
            tenant_id, device_id, type, severity, status, first_seen)


@pytest.fixture
async def lit_city(db):
    city = await make_city(db, "seoul")
    device = await DeviceService(db).create_validated(
        city.principal, NewDevice(DeviceKind.STREETLIGHT, "seoul-1", 37.5, 127.0, serial="S1"))
    return city, device
