"""Bulk import and export against a real PostgreSQL: the event loop and the pool stay free."""

from __future__ import annotations

import asyncio

import pytest

from fleet.errors import ValidationFailed
from fleet.registry import service as registry_service
from fleet.registry.models import DeviceFilter, DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import make_city

ROWS = 50_000


def _invalid_rows() -> str:
    # Every row has a latitude out of range: all the work is parsing and validating.
    return "kind,endpoint,lat,lon\n" + "".join(f"streetlight,sl-{n},91,126.9\n" for n in range(ROWS))


async def test_parsing_and_validating_an_import_leaves_the_event_loop_free(db):
    seoul = await make_city(db, "seoul")
    service = DeviceService(db)
    text = _invalid_rows()
    importing = asyncio.create_task(service.import_csv(seoul.principal, text))
    turns_meanwhile = 0
    # Refused before any database work, the import has no await of its own but the thread's:
    # on the event loop, not one other turn would happen until it were done.
    while not importing.done():
        await asyncio.sleep(0)
        turns_meanwhile += 1
    with pytest.raises(ValidationFailed) as refused:
        await importing
    assert len(refused.value.errors) == ROWS
    assert turns_meanwhile > 1


async def test_an_export_holds_no_connection_between_its_chunks(db, monkeypatch):
    monkeypatch.setattr(registry_service, "EXPORT_CHUNK", 3)
    seoul = await make_city(db, "seoul")
    service = DeviceService(db)
    created = [await service.create_validated(seoul.principal, NewDevice(
        kind=DeviceKind.STREETLIGHT, endpoint=f"sl-{n}", lat=37.5, lon=127.0)) for n in range(8)]
    exported = []
    async for device in service.export(seoul.principal, DeviceFilter()):
        exported.append(device.id)
        # A download paused by a slow client: every connection back in the pool, no transaction open.
        # Exports run in tenant transactions, on the REST API's pool.
        for pool in (db.tenant_pool, db.pool):
            assert pool.get_idle_size() == pool.get_size()
    assert exported == [d.id for d in created]
