"""The demo city: Seoul with a few hundred streetlights, bins and access points across its districts."""

from __future__ import annotations

import random
from typing import Any

from fleet.access.models import Role, Tenant
from fleet.access.service import ApiKeyService, TenantService, system_principal
from fleet.db import Database
from fleet.errors import NotFound
from fleet.registry.models import DeviceFilter
from fleet.registry.service import DeviceService
from simulators.geography import SEOUL, place

DEMO_SLUG = "seoul"
WASTE_KINDS = ("organic", "inorganic", "plastic", "paper", "glass", "metal")


DEMO_COUNTS = {"streetlight": 180, "waste_bin": 90, "wifi_ap": 45}


def demo_rows(streetlights: int = DEMO_COUNTS["streetlight"], bins: int = DEMO_COUNTS["waste_bin"],
              aps: int = DEMO_COUNTS["wifi_ap"], seed: int = 42) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for kind, count, prefix in (("streetlight", streetlights, "sl"), ("waste_bin", bins, "wb"),
                                ("wifi_ap", aps, "ap")):
        for n in range(1, count + 1):
            district = rng.choice(SEOUL)
            lat, lon = place(district, rng)
            row: dict[str, Any] = {"kind": kind, "endpoint": f"{DEMO_SLUG}-{prefix}-{n:05d}",
                                   "serial": f"{prefix.upper()}{rng.randrange(10**8):08d}",
                                   "lat": lat, "lon": lon, "district": district.name,
                                   "tags": ["demo"]}
            if kind == "streetlight":
                row |= {"manufacturer": "Lumen Korea", "model": "LK-120", "nominal_wattage": rng.choice((60, 90, 120)),
                        "lamp_type": "led", "pole_number": f"{district.name[:3].upper()}-{n:04d}"}
            elif kind == "waste_bin":
                row |= {"manufacturer": "CleanCity", "model": "CC-S240", "capacity_litres": rng.choice((120, 240, 660)),
                        "waste_kind": rng.choice(WASTE_KINDS)}
            else:
                row |= {"manufacturer": "AirLink", "model": "AL-6E", "ssid": "Seoul_Free_WiFi",
                        "band": rng.choice(("dual", "5GHz", "6GHz"))}
            rows.append(row)
    return rows


async def seed_demo_city(db: Database) -> tuple[Tenant, str, int]:
    """Create Seoul and its devices unless they exist; always issue a fresh admin key."""
    tenants = TenantService(db)
    try:
        city = await tenants.by_slug(DEMO_SLUG)
    except NotFound:
        city = await tenants.create(DEMO_SLUG, "Seoul Metropolitan Government", "Asia/Seoul")
    admin = system_principal(city)
    devices = DeviceService(db)
    created = 0
    if not (await devices.list(admin, DeviceFilter(), limit=1)).items:
        rows = demo_rows()
        created = len(await devices.import_rows(admin, list(enumerate(rows, start=1))))
    issued = await ApiKeyService(db).issue(admin, Role.ADMIN, "demo admin")
    return city, issued.secret, created
