"""A city-sized registry for the benchmark: plausible Seoul devices, and two ways to load them.

Rows are the raw fields an operator would import (CSV/GeoJSON-shaped dicts). The registry only
lets people set `provisioned` or `maintenance`; `online`, `offline` and `decommissioned` are
set by the network and by DELETE, so the loader applies those afterwards as the database owner,
the way a fleet that has been running for a while would look.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from fleet.access.models import Principal
from fleet.db import Database
from fleet.db.database import init_connection
from fleet.registry.repository import INSERT_COLUMNS, new_device_record
from fleet.registry.service import DeviceService
from fleet.registry.validation import validate_new_device
from simulators.geography import SEOUL, place

KINDS = (("streetlight", "sl", 0.70), ("waste_bin", "wb", 0.20), ("wifi_ap", "ap", 0.10))
MODELS = {
    "streetlight": (("Lumen Korea", "LK-120"), ("Signify", "Luma gen2"), ("Kumho Electric", "KH-LED90")),
    "waste_bin": (("CleanCity", "CC-S240"), ("Ecube Labs", "CleanCAP")),
    "wifi_ap": (("AirLink", "AL-6E"), ("Cisco", "IW9167E")),
}
FIRMWARE = {
    "streetlight": (("3.2.1", 0.55), ("3.1.4", 0.30), ("2.8.0", 0.15)),
    "waste_bin": (("1.9.0", 0.70), ("1.7.2", 0.30)),
    "wifi_ap": (("17.12.3", 0.60), ("17.9.5", 0.40)),
}
# Network-side status of a fleet in service; `maintenance` and `provisioned` come from people.
STATUSES = (("online", 0.88), ("offline", 0.06), ("maintenance", 0.03), ("provisioned", 0.02),
            ("decommissioned", 0.01))
# Independent per device, so a device carries 0-3 of them; rare tags are the hard case for lists.
TAGS = (("zone:residential", 0.45), ("zone:commercial", 0.25), ("main-road", 0.20),
        ("school-zone", 0.08), ("park", 0.06), ("pilot:adaptive-dimming", 0.03), ("flood-risk", 0.02))
STREETS = ("Sejong-daero", "Teheran-ro", "Olympic-ro", "Jong-ro", "Toegye-ro", "Dosan-daero",
           "Yanghwa-ro", "Hangang-daero", "Gangnam-daero", "Dongil-ro", "Nambusunhwan-ro", "Eonju-ro")
WASTE_KINDS = ("organic", "inorganic", "plastic", "paper", "glass", "metal")


@dataclass(frozen=True, slots=True)
class DeviceRow:
    fields: dict[str, Any]
    # Where the network has taken it since import.
    status: str


def _weighted(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def device_rows(city_slug: str, count: int, seed: int = 20261124) -> list[DeviceRow]:
    rng = random.Random(f"{seed}:{city_slug}")
    rows: list[DeviceRow] = []
    installed_from = datetime(2012, 1, 1, tzinfo=UTC)
    for n in range(1, count + 1):
        kind, prefix = rng.choices([(k, p) for k, p, _ in KINDS], weights=[w for *_, w in KINDS])[0]
        district = rng.choice(SEOUL)
        lat, lon = place(district, rng)
        manufacturer, model = rng.choice(MODELS[kind])
        fields: dict[str, Any] = {
            "kind": kind, "endpoint": f"{city_slug}-{prefix}-{n:06d}", "serial": f"{prefix.upper()}{n:08d}",
            "manufacturer": manufacturer, "model": model, "firmware_version": _weighted(rng, FIRMWARE[kind]),
            "lat": lat, "lon": lon, "district": district.name,
            "address": f"{rng.randint(1, 400)} {rng.choice(STREETS)}, {district.name}, Seoul",
            "installed_at": (installed_from + timedelta(days=rng.randrange(5000))).isoformat(),
            "tags": [tag for tag, share in TAGS if rng.random() < share],
        }
        if kind == "streetlight":
            fields |= {"nominal_wattage": rng.choice((60, 90, 120, 150)), "lamp_type": "led",
                       "pole_number": f"{district.name[:3].upper()}-{n:06d}"}
        elif kind == "waste_bin":
            fields |= {"capacity_litres": rng.choice((120, 240, 660)), "waste_kind": rng.choice(WASTE_KINDS)}
        else:
            fields |= {"ssid": "Seoul_Free_WiFi", "band": rng.choice(("dual", "5GHz", "6GHz"))}
        status = _weighted(rng, STATUSES)
        if status == "maintenance":
            fields["status"] = "maintenance"
        rows.append(DeviceRow(fields, status))
    return rows


@dataclass(frozen=True, slots=True)
class LoadReport:
    method: str
    devices: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.devices / self.seconds if self.seconds else 0.0


async def load_via_import(db: Database, principal: Principal, rows: list[DeviceRow],
                          chunk: int = 5000) -> LoadReport:
    """The real import path (validation, uniqueness checks, COPY, audit entries), chunk by chunk."""
    started = time.perf_counter()
    service = DeviceService(db)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        await service.import_rows(principal, [(i, r.fields) for i, r in enumerate(part, start=1)])
    async with db.system_tx() as conn:
        await _apply_network_status(conn, rows)
    return LoadReport("import", len(rows), time.perf_counter() - started)


async def load_via_copy(dsn: str, tenant_id: UUID, rows: list[DeviceRow],
                        chunk: int = 20_000) -> LoadReport:
    """Validated like an import, then COPY straight into `devices` on the admin login `dsn`
    (no audit entries): COPY FROM refuses tables with row-level security for anyone walled by
    it, and the service's logins are."""
    started = time.perf_counter()
    status_at = INSERT_COLUMNS.index("status")
    admin = await asyncpg.connect(dsn)
    await init_connection(admin)
    try:
        await _copy_devices(admin, tenant_id, rows, chunk, status_at)
    finally:
        await admin.close()
    return LoadReport("copy", len(rows), time.perf_counter() - started)


async def _copy_devices(conn: asyncpg.Connection, tenant_id: UUID, rows: list[DeviceRow], chunk: int,
                        status_at: int) -> None:
    async with conn.transaction():
        for start in range(0, len(rows), chunk):
            records = []
            for row in rows[start:start + chunk]:
                record = list(new_device_record(tenant_id, validate_new_device(row.fields)))
                record[status_at] = row.status
                records.append(record)
            await conn.copy_records_to_table("devices", records=records, columns=list(INSERT_COLUMNS))
        await conn.execute("update devices set decommissioned_at = updated_at "
                           "where tenant_id = $1 and status = 'decommissioned'", tenant_id)


async def _apply_network_status(conn: asyncpg.Connection, rows: list[DeviceRow]) -> None:
    changed = [(r.fields["endpoint"], r.status) for r in rows if r.status not in ("provisioned", "maintenance")]
    await conn.execute(
        """update devices d set status = s.status, updated_at = now(),
               decommissioned_at = case when s.status = 'decommissioned' then now() end
           from unnest($1::text[], $2::text[]) as s(endpoint, status)
           where d.endpoint = s.endpoint""",
        [e for e, _ in changed], [s for _, s in changed])


async def analyze(dsn: str) -> None:
    """What autovacuum would do after a bulk load; without it the planner guesses row counts."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("vacuum (analyze) devices")
        await conn.execute("vacuum (analyze) api_keys")
        await conn.execute("vacuum (analyze) tenants")
    finally:
        await conn.close()
