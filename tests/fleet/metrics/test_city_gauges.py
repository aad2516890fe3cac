"""The city-wide gauges: one read of the database serves the scrapes of MAX_AGE_S, then they read again."""

from __future__ import annotations

import asyncio

from fleet.metrics.service import CITY_GAUGES, CityGauges
from fleet.registrations.models import RegisterRequest
from fleet.registrations.service import RegistrationService
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import make_city


def online(gauges: CityGauges) -> dict[tuple[str, ...], float]:
    family = next(f for f in gauges.collect() if f.name == "fleet_registrations_online")
    return {tuple(s.labels.values()): s.value for s in family.samples}


async def test_counts_are_read_once_per_max_age(db):
    now = [0.0]
    gauges = CityGauges(db, max_age_s=15, clock=lambda: now[0])
    assert list(gauges.collect()) == []  # nothing read yet: nothing to report
    city = await make_city(db, "seoul")
    await DeviceService(db).create_validated(
        city.principal, NewDevice(kind=DeviceKind.STREETLIGHT, endpoint="light-1", lat=37.5, lon=127.0))

    await asyncio.gather(gauges.refresh(), gauges.refresh())  # two scrapes at once: one read
    assert gauges.reads == 1 and online(gauges) == {}
    assert {f.name for f in gauges.collect()} == {
        "fleet_registrations_online", "fleet_commands", "fleet_alarms", "fleet_workorders_open",
        "fleet_campaign_devices"}

    await RegistrationService(db, node="test").register(RegisterRequest(
        endpoint="light-1", address="127.0.0.1", port=5683, lifetime_s=300, binding="U",
        lwm2m_version="1.1", object_links="</3/0>"))
    now[0] = 14.9
    await gauges.refresh()
    assert gauges.reads == 1 and online(gauges) == {}  # still the cached counts

    now[0] = 15.0
    await gauges.refresh()
    assert gauges.reads == 2 and online(gauges) == {("seoul", "streetlight"): 1}


async def test_a_scrape_during_the_first_read_waits_for_it(db):
    gauges = CityGauges(db)
    first = asyncio.create_task(gauges.refresh())
    while gauges.reads == 0:  # until the first scrape's read is under way
        await asyncio.sleep(0)
    await gauges.refresh()
    assert gauges.reads == 1 and len(list(gauges.collect())) == len(CITY_GAUGES)  # not none
    await first
