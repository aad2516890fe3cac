"""The demo's bins' past: two weeks of hourly fill readings on the city's old fixed round, from
the same fill model the live simulated bins follow, so forecasts and the first plan have
history to learn from when the demo starts for the first time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog

from fleet.access.models import Tenant
from fleet.access.service import system_principal
from fleet.db import Database
from fleet.registry.models import DeviceFilter, DeviceKind
from fleet.registry.service import DeviceService
from fleet.telemetry.repository import TelemetryRepository
from simulators.fill import fill_series
from simulators.inventory import DeviceSpec

log = structlog.get_logger(__name__)

FILL = "/3435/0/2"
HISTORY_DAYS = 14
INTERVAL_S = 3600.0
# The history stops more than a day before the live readings begin: the forecaster takes no
# filling from a silence over 24 h, so the jump to the live bin's own first reading teaches it
# nothing wrong (a fall reads as the bin emptied meanwhile).
GAP = timedelta(hours=26)
SIMULATION_SEED = 1  # `fleet simulate`'s default, which the demo's devices run with


def spec_of(device) -> DeviceSpec:
    """The spec `fleet simulate` builds for this bin from the API (inventory.from_api)."""
    return DeviceSpec(device.kind, device.endpoint, device.location.lat, device.location.lon, device.district,
                      device.serial, device.manufacturer, device.model, device.firmware_version,
                      dict(device.attributes))


async def seed_demo_fill_history(db: Database, city: Tenant, *, now: datetime | None = None,
                                 seed: int = SIMULATION_SEED) -> int:
    """Readings for every bin of the city, ending GAP before `now`; the number stored. Call it
    once, when the demo's devices are created, before the scheduler learns their profiles."""
    admin = system_principal(city)
    devices, cursor = [], None
    while True:
        page = await DeviceService(db).list(admin, DeviceFilter(kind=DeviceKind.WASTE_BIN), cursor=cursor, limit=500)
        devices += page.items
        if (cursor := page.next_cursor) is None:
            break
    end = (now or datetime.now(UTC)) - GAP
    start = end - timedelta(days=HISTORY_DAYS)
    records = []
    for device in devices:
        series = fill_series(spec_of(device), start.astimezone(UTC), HISTORY_DAYS, seed, INTERVAL_S,
                             emptying="round", timezone=city.timezone)
        records += [(city.id, device.id, when, FILL, percent, None, None) for when, percent in series]
    async with db.system_tx() as conn:
        telemetry = TelemetryRepository(conn)
        # Daily partitions for the history first, so none of it lands in the default partition.
        await telemetry.ensure_partitions(start.date(), HISTORY_DAYS + 2)
        await telemetry.prepare_staging()
        await telemetry.append_staged(records)  # as the device edge writes (COPY meets the wall otherwise)
    log.info("demo bins' fill history stored", bins=len(devices), readings=len(records), days=HISTORY_DAYS)
    return len(records)
