"""The leader forgets browser sessions that ended or expired long ago; live ones stay."""

from __future__ import annotations

import asyncio
import contextlib

from fleet.access.service import ApiKeyService, SessionService
from fleet.scheduling.leader import LeaderElection
from fleet.scheduling.retention import SessionRetention
from tests.conftest import make_city


async def test_sessions_over_for_longer_than_kept_are_deleted_and_the_rest_stay(db):
    city = await make_city(db, "seoul")
    sessions = SessionService(db, ApiKeyService(db))
    kept, ended_long_ago, expired_long_ago = [await sessions.sign_in(city.key) for _ in range(3)]
    await sessions.sign_out(ended_long_ago.secret)
    async with db.system_tx() as conn:
        await conn.execute("update web_sessions set ended_at = now() - interval '31 days' where id = $1",
                           ended_long_ago.principal.session_id)
        await conn.execute("update web_sessions set expires_at = now() - interval '31 days' where id = $1",
                           expired_long_ago.principal.session_id)
    captured = []

    @contextlib.asynccontextmanager
    async def capture(leadership):
        captured.append(leadership)
        yield

    task = asyncio.create_task(LeaderElection(db, "node-a", retry_s=0.1, check_s=0.2).run(capture))
    try:
        while not captured:
            await asyncio.sleep(0.02)
        assert await SessionRetention(db).prune(captured[0]) == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    async with db.system_tx() as conn:
        assert await conn.fetchval("select array_agg(id) from web_sessions") == [kept.principal.session_id]
    assert (await sessions.authenticate(kept.secret)).tenant_id == city.tenant_id
