"""A node's worker restarted under its slot's name takes back only what its predecessor sent, never what another node sent meanwhile."""

from __future__ import annotations

from uuid import UUID

from fleet.commands.repository import NODE_TIMEOUT, CommandRepository
from fleet.db import Database
from tests.conftest import make_city
from tests.fleet.collection.forecast_helpers import add_bin

DEAD = "host:1/coap-1"


async def _queued(conn, tenant_id: UUID, device_id: UUID) -> UUID:
    batch = await conn.fetchval(
        """insert into command_batches (tenant_id, operation, path, target, device_count, expires_at)
           values ($1, 'read', '/3/0', '{}', 1, now() + interval '1 hour') returning id""", tenant_id)
    return await conn.fetchval(
        """insert into commands (batch_id, tenant_id, device_id, operation, path, expires_at, next_attempt_at)
           values ($1, $2, $3, 'read', '/3/0', now() + interval '1 hour', now() - interval '1 minute')
           returning id""", batch, tenant_id, device_id)


async def _registered(conn, tenant_id: UUID, device_id: UUID, endpoint: str) -> None:
    await conn.execute(
        """insert into registrations (id, device_id, tenant_id, endpoint, address, port, lifetime_s, binding,
                                      lwm2m_version, object_links, node, expires_at)
           values ($1, $2, $3, $1, '127.0.0.1', 40000, 300, 'U', '1.1', '</3/0>', $4, now() + interval '1 hour')""",
        endpoint, device_id, tenant_id, DEAD)


async def test_a_restarted_worker_leaves_what_another_node_sent_meanwhile(db: Database):
    city = await make_city(db, "seoul")
    mine = await add_bin(db, city.principal, "sent-by-the-dead-process")
    theirs = await add_bin(db, city.principal, "sent-by-another-node")
    async with db.system_tx() as conn:
        for device, endpoint in ((mine, "r-mine"), (theirs, "r-theirs")):
            await _registered(conn, city.tenant_id, device, endpoint)
        # The worker died 40 s ago, after its last heartbeat, with one command under way.
        await conn.execute("insert into fleet_nodes (name, heartbeat_at) values ($1, now() - interval '40 seconds')",
                           DEAD)
        sent_before = await _queued(conn, city.tenant_id, mine)
        await conn.execute("update commands set status = 'sent', attempts = 1, sent_at = now() - interval '35 seconds'"
                           " where id = $1", sent_before)
        # Its heartbeat missed, another node delivers the other device's command (its slot).
        other = await _queued(conn, city.tenant_id, theirs)
        claimed = await CommandRepository(conn).claim_due("other:2/coap-1", 10, node_timeout=NODE_TIMEOUT)
        assert [c.id for c, *_ in claimed] == [other]
    async with db.system_tx() as conn:
        # Before its first heartbeat: the predecessor's last one tells its sends from the other node's.
        assert await CommandRepository(conn).release_through(DEAD, NODE_TIMEOUT) == 1
        statuses = dict(await conn.fetch("select id, status from commands where id = any($1::uuid[])",
                                         [sent_before, other]))
    assert statuses == {sent_before: "queued", other: "sent"}
