"""The demo city: Seoul with a few hundred streetlights, bins and access points across its
districts, a crew, and the faults its simulated devices show in the first minute."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from msgspec.structs import replace

from fleet.access.models import Principal, Tenant
from fleet.alarms.models import AlarmType
from fleet.access.service import TenantService, system_principal
from fleet.crews.models import CrewUpdate, Place
from fleet.crews.service import CrewService
from fleet.db import Database
from fleet.errors import NotFound
from fleet.registry.models import DeviceFilter
from fleet.registry.service import DeviceService
from fleet.settings import SecuritySettings
from fleet.workorders.models import AlarmRule, WorkOrderRules
from fleet.workorders.service import WorkOrderService
from simulators.geography import SEOUL, place
from simulators.seed_keys import (CREDENTIALS_KEY_VARIABLE, DATA_DIR_VARIABLE, URL_VARIABLE, demo_keys,
                                  write_demo_env)

if TYPE_CHECKING:
    from simulators.seed_firmware import DemoFirmware
    from simulators.seed_security import DemoSecurity

DEMO_SLUG = "seoul"
WASTE_KINDS = ("organic", "inorganic", "plastic", "paper", "glass", "metal")


DEMO_COUNTS = {"streetlight": 180, "waste_bin": 90, "wifi_ap": 45}
DEMO_CREW = "Jung-gu maintenance crew"
# The crew's depot in Jung-gu: with the demo's rules every work order goes to the nearest crew,
# which in the demo is this one, so its tablet (`?assigned_to=me`) fills by itself.
DEMO_CREW_BASE = Place(37.5636, 126.9976)
# Forced at start (`fleet simulate --fault KIND=FRACTION`, beside --faults' low random rates), so
# a new user sees alarms within a minute whatever the hour: about four failed lamps and two dark
# lights (at night), two day burners (by day), three overflowing bins, a bin on its side, two
# access points down and one overloaded, a low battery and two skewed clocks. The firmware faults
# lie in wait for the demo's campaign (simulators.seed_firmware): about one device in fifty of
# each kind fails its install (Update Result 8) or comes back on the old version, so failed
# devices, their reasons and `firmware_update_failed` alarms show as the waves go by.
DEMO_FAULTS = {"lamp_failure": 0.02, "dark_at_night": 0.01, "day_burner": 0.01, "overflow": 0.03,
               "knockover": 0.01, "low_battery": 0.01, "ap_down": 0.04, "ap_overloaded": 0.02,
               "clock_skew": 0.005, "fw_install_fail": 0.02, "fw_rollback": 0.02}


@dataclass(frozen=True, slots=True)
class DemoCity:
    city: Tenant
    admin_key: str
    created: int  # devices seeded this run
    crew_name: str
    crew_key: str
    firmware: DemoFirmware | None = None  # the firmware campaign, when `fleet demo` seeded one
    crew_id: UUID | None = None
    reporter_key: str = ""  # Open311's `api_key` for the tour's citizen reports
    env_file: Path | None = None  # demo.env: the keys and the URL, for `source` in a shell
    keys_reused: bool = False  # the keys are the last run's
    security: DemoSecurity | None = None  # the devices' credentials, when the demo has a credentials key


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


# Seoul's lights as a city would run them: on at sunset, dimmed through the small hours, raised
# for the morning commute, off at sunrise; festive nights stay bright until 02:00.
DEMO_PROGRAMS = (
    {"name": "Seoul standard night", "switch_points": [
        {"id": "dusk", "anchor": "sunset", "offset_minutes": 0, "dimming_level": 100},
        {"id": "late", "anchor": "local_time", "local_time": "23:00", "dimming_level": 60},
        {"id": "small-hours", "anchor": "local_time", "local_time": "01:00", "dimming_level": 40},
        {"id": "commute", "anchor": "local_time", "local_time": "05:30", "dimming_level": 80},
        {"id": "dawn", "anchor": "sunrise", "offset_minutes": 0, "dimming_level": 0}]},
    {"name": "Festive night", "switch_points": [
        {"id": "dusk", "anchor": "sunset", "offset_minutes": -15, "dimming_level": 100},
        {"id": "late", "anchor": "local_time", "local_time": "02:00", "dimming_level": 60},
        {"id": "dawn", "anchor": "sunrise", "offset_minutes": 0, "dimming_level": 0}]},
    {"name": "Weekend night", "switch_points": [
        {"id": "dusk", "anchor": "sunset", "offset_minutes": 0, "dimming_level": 100},
        {"id": "late", "anchor": "local_time", "local_time": "00:30", "dimming_level": 60},
        {"id": "small-hours", "anchor": "local_time", "local_time": "02:00", "dimming_level": 40},
        {"id": "dawn", "anchor": "sunrise", "offset_minutes": 0, "dimming_level": 0}]},
)


async def seed_demo_lighting(db: Database, city: Tenant) -> bool:
    """One calendar for the whole city, assigned to each district, unless the city has one."""
    from fleet.lighting.service import LightingService
    from fleet.overview.service import OverviewService

    admin = system_principal(city)
    lighting = LightingService(db)
    if await lighting.list_calendars(admin):
        return False
    standard, festive, weekend = [await lighting.create_program(admin, program) for program in DEMO_PROGRAMS]
    calendar = await lighting.create_calendar(admin, {
        "name": "Seoul streets", "default_program_id": str(standard.id), "rules": [
            # Christmas to New Year's Day, and the nights before the Lunar New Year and Chuseok.
            {"id": "year-end", "program_id": str(festive.id),
             "date_range": {"first": "12-24", "last": "01-01"}},
            {"id": "holidays", "program_id": str(festive.id),
             "dates": ["2027-02-05", "2027-02-06", "2027-09-14", "2027-09-15"]},
            {"id": "weekend", "program_id": str(weekend.id), "weekdays": [5, 6]}]})
    # A district is known by its devices (another is refused): those the seeded devices stand in.
    known = {d.name for d in (await OverviewService(db).district_counts(admin)).items}
    for district in SEOUL:
        if district.name in known:
            await lighting.assign(admin, {"calendar_id": str(calendar.id), "district": district.name})
    return True


async def seed_demo_city(db: Database, env_file: Path | None = None, url: str | None = None,
                         data_dir: Path | None = None, credentials_key: str | None = None,
                         security: SecuritySettings | None = None) -> DemoCity:
    """Create Seoul, its devices, its lighting calendar and its crew unless they exist. The keys
    (admin, crew tablet, Open311 reporter) are the last run's if `env_file` holds them and they
    are still valid, else fresh ones (earlier demo keys are revoked); `env_file` is written
    again with them, the API's `url`, the embedded database's `data_dir` and the data dir's
    `credentials_key` (FLEET_CREDENTIALS_KEY). With `security` (a credentials key) and `env_file`,
    the devices get their DTLS credentials too, in Fleet and in the credentials file beside
    `env_file` (simulators.seed_security)."""
    tenants = TenantService(db)
    try:
        city = await tenants.by_slug(DEMO_SLUG)
    except NotFound:
        # The demo's simulated devices include NoSec ones; the banner says the city allows them.
        city = await tenants.create(DEMO_SLUG, "Seoul Metropolitan Government", "Asia/Seoul", allow_nosec_devices=True)
    admin = system_principal(city)
    devices = DeviceService(db)
    created = 0
    if not (await devices.list(admin, DeviceFilter(), limit=1)).items:
        rows = demo_rows()
        created = len(await devices.import_rows(admin, list(enumerate(rows, start=1))))
    await seed_demo_lighting(db, city)
    crews = CrewService(db)
    crew = await crews.ensure(admin, DEMO_CREW)
    if crew.home_base is None:
        crew = await crews.update(admin, crew.id, CrewUpdate(home_base=DEMO_CREW_BASE))
    await seed_demo_work_order_rules(db, admin)
    keys = await demo_keys(db, city, crew.id, env_file)
    seeded_security = None
    if env_file is not None and security is not None and security.credentials_key is not None:
        from simulators.seed_security import DEMO_CREDENTIALS, seed_demo_security

        seeded_security = await seed_demo_security(db, city, security, env_file.parent / DEMO_CREDENTIALS,
                                                   fresh=created > 0)
    if env_file is not None:
        write_demo_env(env_file, {**({URL_VARIABLE: url} if url else {}), "ADMIN_KEY": keys.admin,
                                  "CREW_KEY": keys.crew, "REPORTER_KEY": keys.reporter,
                                  # So `fleet tenant` and `fleet apikey` in the shell reach the
                                  # demo's database, not an empty one made in the default place.
                                  **({DATA_DIR_VARIABLE: str(data_dir.expanduser().resolve())} if data_dir else {}),
                                  # So `fleet serve` in that shell reads the demo's device keys.
                                  **({CREDENTIALS_KEY_VARIABLE: credentials_key} if credentials_key else {})})
    return DemoCity(city, keys.admin, created, DEMO_CREW, keys.crew, crew_id=crew.id, reporter_key=keys.reporter,
                    env_file=env_file, keys_reused=keys.reused, security=seeded_security)


async def seed_demo_work_order_rules(db: Database, admin: Principal) -> None:
    """Faults people must go out for become work orders a minute after nobody acknowledged them,
    on the nearest crew's tablet, so a new user sees the whole chain (fault, alarm, work order,
    the crew's list) within a minute or two."""
    work_orders = WorkOrderService(db)
    current = (await work_orders.rules(admin)).alarm_rules
    # A city that set its own rules keeps them; the demo's earlier rules (before they assigned
    # the nearest crew) are brought up to date.
    if current and current != [replace(rule, assign="none") for rule in DEMO_RULES]:
        return
    await work_orders.put_rules(admin, WorkOrderRules(alarm_rules=DEMO_RULES))


DEMO_RULES = [
    AlarmRule(alarm_types=[AlarmType.LAMP_FAILURE, AlarmType.DARK_AT_NIGHT], work_order_type="repair_lamp",
              min_severity="major", unacknowledged_minutes=1, priority="high", assign="nearest_crew"),
    AlarmRule(alarm_types=[AlarmType.BIN_OVERFLOW], work_order_type="empty_bin",
              min_severity="major", unacknowledged_minutes=1, priority="medium", assign="nearest_crew"),
    AlarmRule(alarm_types=[AlarmType.BIN_FIRE, AlarmType.BIN_KNOCKED_OVER], work_order_type="clean_or_repair_bin",
              min_severity="major", unacknowledged_minutes=0, priority="urgent", assign="nearest_crew"),
    AlarmRule(alarm_types=[AlarmType.AP_DOWN], work_order_type="inspect_access_point",
              min_severity="major", unacknowledged_minutes=1, priority="high", assign="nearest_crew"),
]


def demo_fault_arguments() -> list[str]:
    """`fleet simulate` arguments for the demo's faults."""
    return ["--faults", *(a for kind, fraction in DEMO_FAULTS.items() for a in ("--fault", f"{kind}={fraction}"))]
