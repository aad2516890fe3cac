"""The demo city: seeded once, with a lighting calendar every Seoul streetlight follows."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from fleet.access.service import TenantService, system_principal
from fleet.lighting.preview import PreviewService
from fleet.lighting.reconcile import Reconciler
from fleet.lighting.service import LightingService
from fleet.registry.models import DeviceFilter, DeviceKind
from fleet.registry.service import DeviceService
from simulators.geography import SEOUL
from simulators.seed import DEMO_COUNTS, seed_demo_city

KST = ZoneInfo("Asia/Seoul")


async def test_demo_city_is_seeded_once_with_its_lighting(db):
    city, key, created = await seed_demo_city(db)
    assert created == sum(DEMO_COUNTS.values()) and key
    again, second_key, created_again = await seed_demo_city(db)
    assert (again.id, created_again) == (city.id, 0) and second_key != key

    admin = system_principal(await TenantService(db).by_slug(city.slug))
    lighting = LightingService(db)
    (calendar,) = await lighting.list_calendars(admin)
    assignments = await lighting.list_assignments(admin)
    assert {a.district for a in assignments} == {d.name for d in SEOUL}
    assert {a.calendar_id for a in assignments} == {calendar.id}

    lights = (await DeviceService(db).list(admin, DeviceFilter(kind=DeviceKind.STREETLIGHT), limit=1000)).items
    previews = PreviewService(db)
    for at, level in ((dt.datetime(2026, 12, 1, 23, 30, tzinfo=KST), 60),   # a Tuesday: standard night
                      (dt.datetime(2026, 12, 25, 1, 30, tzinfo=KST), 100),   # Christmas night: festive
                      (dt.datetime(2026, 12, 5, 0, 15, tzinfo=KST), 100),    # Friday night: weekend
                      (dt.datetime(2026, 12, 2, 12, 0, tzinfo=KST), 0)):     # noon
        preview = await previews.preview(admin, device_id=lights[0].id, at=at)
        assert preview.lights[0].level.dimming_level == level, at

    report = await Reconciler(db).reconcile_tenant(
        await TenantService(db).by_slug(city.slug), dt.datetime(2026, 12, 1, 23, 30, tzinfo=KST))
    assert report.scheduled_lights == report.commanded == len(lights) == DEMO_COUNTS["streetlight"]
