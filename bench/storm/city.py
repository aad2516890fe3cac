"""The storm's cities: one tenant per configuration measured, N streetlights each, an admin key,
and the lights split into devices files, one per load process."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from bench.dimming.city import light, write_devices_file
from fleet.access.models import Role
from fleet.access.service import ApiKeyService, TenantService, system_principal
from fleet.db import Database
from fleet.registry.repository import DeviceRepository


@dataclass(frozen=True, slots=True)
class StormCity:
    slug: str
    tenant_id: UUID
    key: str  # an admin key: the REST load lists the city's devices with it
    devices: int
    devices_files: list[tuple[Path, int]]  # (file, lights in it): one per load process


def split(count: int, parts: int) -> list[int]:
    """`count` as `parts` near-equal shares, the larger first."""
    return [count // parts + (1 if n < count % parts else 0) for n in range(parts)]


async def prepare(db: Database, slug: str, count: int, processes: int, work: Path) -> StormCity:
    """A city of `count` lights (its endpoints and serials carry `slug`: endpoints are unique
    across cities), inserted as the registry's import does; firmware_version stays empty
    until Fleet reads /3/0 after a Register, which is how the benchmark sees a device read."""
    tenant = await TenantService(db).create(slug, f"Storm Bench City {slug}", "Asia/Seoul", allow_nosec_devices=True)
    lights = [dataclasses.replace(light(n), endpoint=f"{slug}-sl-{n:05d}", serial=f"{slug.upper()}{n:08d}")
              for n in range(count)]
    async with db.tenant_tx(tenant.id) as conn:
        await DeviceRepository(conn).insert_many(tenant.id, lights)
    issued = await ApiKeyService(db).issue(system_principal(tenant), Role.ADMIN, "bench.storm")
    files = []
    first = 0
    for number, share in enumerate(split(count, processes), start=1):
        path = work / f"{slug}-{number}.csv"
        write_devices_file(path, lights[first:first + share])
        files.append((path, share))
        first += share
    return StormCity(slug, tenant.id, issued.secret, count, files)


async def progress(db: Database, city: StormCity, storm_start) -> dict:
    """Devices online (registered since the storm began) and read (/3/0 recorded), and when the
    last of each happened, in seconds from `storm_start` on PostgreSQL's clock."""
    async with db.pool.acquire() as conn:
        return dict(await conn.fetchrow(
            """select (select count(*) from registrations where tenant_id = $1 and registered_at >= $2) as online,
                      (select count(*) from devices where tenant_id = $1 and firmware_version is not null) as read,
                      extract(epoch from (select max(registered_at) from registrations
                                          where tenant_id = $1) - $2)::float8 as online_s,
                      extract(epoch from (select max(updated_at) from devices
                                          where tenant_id = $1 and firmware_version is not null) - $2)::float8
                          as read_s""", city.tenant_id, storm_start))
