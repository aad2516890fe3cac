"""SQL for the event log: appending in the caller's transaction, reading in commit order."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from fleet.events.models import Event, Position


def _event(row: asyncpg.Record) -> Event:
    payload = row["payload"]
    return Event(row["tenant_id"], row["id"], int(row["xid"]), row["at"], row["kind"],
                 row["subject_type"], row["subject_id"],
                 json.loads(payload) if isinstance(payload, str) else payload)


class EventRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def append(self, tenant_id: UUID, kind: str, subject_type: str, subject_id: object,
                     payload: dict[str, Any]) -> None:
        await self.conn.execute(
            "insert into events (tenant_id, kind, subject_type, subject_id, payload)"
            " values ($1, $2, $3, $4, $5::jsonb)",
            tenant_id, kind, subject_type, str(subject_id), json.dumps(payload, default=str))

    async def append_many(self, rows: Iterable[tuple[UUID, str, str, object, dict[str, Any]]]) -> None:
        """One statement for many events (e.g. a batch of command outcomes)."""
        rows = list(rows)
        if not rows:
            return
        tenants, kinds, types, subjects, payloads = zip(*rows, strict=True)
        await self.conn.execute(
            """insert into events (tenant_id, kind, subject_type, subject_id, payload)
               select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[])""",
            list(tenants), list(kinds), list(types), [str(s) for s in subjects],
            [json.dumps(p, default=str) for p in payloads])

    async def after(self, tenant_id: UUID, position: Position, limit: int,
                    subjects: list[tuple[str, str]] | None = None) -> list[Event]:
        """Events after `position` from transactions that have all finished, in log order.

        `pg_snapshot_xmin` is the oldest transaction still running: every event below it is
        committed (or never will be), so the order up to there is final.
        """
        rows = await self.conn.fetch(
            """select tenant_id, id, xid::text::bigint as xid, at, kind, subject_type, subject_id, payload
               from events
               where tenant_id = $1
                 and (xid, id) > ($2::text::xid8, $3)
                 and xid < pg_snapshot_xmin(pg_current_snapshot())
               order by xid, id
               limit $4""",
            tenant_id, str(position.xid), position.id, limit)
        return [_event(row) for row in rows]

    async def horizon(self) -> Position:
        """The position every event visible from now on will come after."""
        xmin = await self.conn.fetchval("select pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        return Position(xmin - 1, 2**62)

    async def prune_before(self, cutoff: datetime, batch: int = 10_000) -> int:
        """Forget events older than the retention (across cities: run by the scheduler)."""
        status = await self.conn.execute(
            "delete from events where ctid in (select ctid from events where at < $1 limit $2)",
            cutoff, batch)
        return int(status.split()[-1])
