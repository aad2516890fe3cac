"""Migration 0039: every node reloads its credential directory only when a city's modes really change."""

from __future__ import annotations

import asyncio

from fleet.access.models import TenantUpdate
from fleet.access.service import TenantService
from tests.conftest import make_city


async def test_only_a_real_change_of_security_modes_reloads_every_directory(db):
    city = await make_city(db, "seoul")
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with db.pool.acquire() as conn:
        await conn.add_listener("fleet_credentials", lambda *args: heard.put_nowait(args[3]))
        tenants = TenantService(db)
        # The same modes, as a PATCH echoing what GET showed sends them: no reload.
        await tenants.update(city.principal, TenantUpdate(security_modes=["rpk", "psk"]))
        async with db.system_tx() as tx:
            await tx.execute("update tenants set security_modes = security_modes")
            await tx.execute("select pg_notify('fleet_credentials', 'marker')")
        await tenants.update(city.principal, TenantUpdate(security_modes=["psk"]))
        async with asyncio.timeout(10):
            # Notifications arrive in commit order: nothing came before the marker.
            assert [await heard.get(), await heard.get()] == ["marker", "*"]
