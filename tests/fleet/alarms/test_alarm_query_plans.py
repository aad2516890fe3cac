"""The alarm list's SQL against the indexes written for it: the default page of open alarms
stays an index walk however much history of cleared alarms a city piles up."""

from __future__ import annotations

from fleet.alarms.filters import parse_query
from fleet.alarms.repository import AlarmRepository
from tests.conftest import Explained, make_city


async def _history(db, city, devices: int, cleared_per_device: int) -> None:
    async with db.system_tx() as conn:
        await conn.execute(
            """insert into devices (tenant_id, kind, endpoint, lat, lon)
               select $1, 'streetlight', 'lamp-' || i, 37.5 + i * 1e-5, 127.0 from generate_series(1, $2) i""",
            city.tenant_id, devices)
        await conn.execute(
            """insert into alarms (tenant_id, device_id, type, severity, status, first_seen, last_seen,
                                   cleared_at, clear_reason)
               select d.tenant_id, d.id, 'lamp_failure', 'major', 'cleared', now(), now(), now(), 'condition'
               from devices d, generate_series(1, $2) where d.tenant_id = $1""",
            city.tenant_id, cleared_per_device)
        await conn.execute(
            """insert into alarms (tenant_id, device_id, type, severity, first_seen, last_seen)
               select tenant_id, id, 'lamp_failure', 'major', now(), now() from devices
               where tenant_id = $1 order by seq limit 5""", city.tenant_id)
        await conn.execute("analyze alarms")


async def test_the_default_page_of_open_alarms_walks_the_open_index(db):
    city = await make_city(db, "seoul")
    await _history(db, city, devices=200, cleared_per_device=20)
    async with db.tenant_tx(city.tenant_id, readonly=True) as conn:
        explained = Explained(conn, generic=True)
        repo = AlarmRepository(explained)
        for raw in ({}, {"status": "open"}, {"severity": "major"}):
            await repo.list(city.tenant_id, parse_query(raw), after=None, limit=100)
    for plan in explained.plans:
        # Only indexes of open alarms: none that holds the cleared history.
        assert not any(" on alarms a" in line and "alarms_open" not in line and "alarms_one_open" not in line
                       for line in plan.splitlines()), plan
