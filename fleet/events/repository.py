"""SQL for the event log: appending in the caller's transaction, reading in commit order."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from fleet.events.models import Event, Position

# Identity ids are bigint; xid8 is unsigned 64-bit but never near 2**63 in practice.
_EVENT_COLUMNS = "tenant_id, id, xid::text::bigint as xid, at, kind, subject_type, subject_id, payload"


# For statements that change an entity and record its event in the same round trip: follow
# with a SELECT of (tenant_id, kind, subject_type, subject_id, payload) rows, e.g. from a CTE.
INSERT_EVENTS = "insert into events (tenant_id, kind, subject_type, subject_id, payload)"


def _event(row: asyncpg.Record) -> Event:
    payload = row["payload"]
    return Event(row["tenant_id"], row["id"], int(row["xid"]), row["at"], row["kind"],
                 row["subject_type"], row["subject_id"],
                 json.loads(payload) if isinstance(payload, str) else payload)


class EventRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # Payloads go through the pool's jsonb codec (msgspec): UUIDs, datetimes, enums, dataclasses
    # and Structs are written as JSON. (A pre-encoded string would be stored as a JSON string.)
    async def append(self, tenant_id: UUID, kind: str, subject_type: str, subject_id: object,
                     payload: dict[str, Any]) -> None:
        await self.conn.execute(
            "insert into events (tenant_id, kind, subject_type, subject_id, payload)"
            " values ($1, $2, $3, $4, $5::jsonb)",
            tenant_id, kind, subject_type, str(subject_id), payload)

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
            list(payloads))

    async def after(self, tenant_id: UUID, position: Position, limit: int,
                    subjects: Sequence[tuple[str, str]] | None = None) -> list[Event]:
        """Events after `position` from transactions that have all finished, in log order;
        with `subjects`, only those about these (subject_type, subject_id) pairs.

        `pg_snapshot_xmin` of the statement's snapshot is the oldest transaction still running:
        every event below it is committed and visible in that same snapshot (or rolled back and
        never will be), and every event written from now on gets a larger xid. So the order up
        to there is final: a transaction that began earlier and commits later is read once it
        commits, never skipped. The price: one long writing transaction anywhere on the server
        holds every reader back until it ends.
        """
        subject_types = [s[0] for s in subjects] if subjects is not None else None
        subject_ids = [str(s[1]) for s in subjects] if subjects is not None else None
        # `events.xid`, not `xid`: the bare name would be the output column (a bigint), which
        # no index orders, and every read from far behind would sort the city's whole log.
        rows = await self.conn.fetch(
            f"""select {_EVENT_COLUMNS} from events
                where events.tenant_id = $1
                  and (events.xid, events.id) > ($2::text::xid8, $3)
                  and events.xid < pg_snapshot_xmin(pg_current_snapshot())
                  and ($5::text[] is null or (events.subject_type, events.subject_id) in (
                          select * from unnest($5::text[], $6::text[])))
                order by events.xid, events.id
                limit $4""",
            tenant_id, str(position.xid), position.id, limit, subject_types, subject_ids)
        return [_event(row) for row in rows]

    async def horizon(self) -> Position:
        """The position every event visible from now on will come after."""
        xmin = await self.conn.fetchval("select pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        return Position(xmin - 1, 2**62)

    async def resumable(self, tenant_id: UUID, position: Position) -> tuple[bool, bool]:
        """(pruned, unknown): whether retention deleted events after `position`, and whether
        the position lies beyond any transaction this database has begun (another database's)."""
        row = await self.conn.fetchrow(
            """select coalesce((p.xid, p.id) > ($2::text::xid8, $3), false) as pruned,
                      $2::text::xid8 >= pg_snapshot_xmax(pg_current_snapshot()) as unknown
               from (select 1) one left join events_pruned p on p.tenant_id = $1""",
            tenant_id, str(position.xid), position.id)
        return row["pruned"], row["unknown"]

    async def prune_before(self, cutoff: datetime, batch: int = 10_000) -> int:
        """Forget up to `batch` events older than `cutoff`, across cities (run by the scheduler),
        and remember per city the last position forgotten."""
        return await self.conn.fetchval(
            """with gone as (
                   delete from events where ctid = any(array(
                       select ctid from events where at < $1 limit $2))
                   returning tenant_id, xid, id),
               last as (
                   select distinct on (tenant_id) tenant_id, xid, id from gone
                   order by tenant_id, xid desc, id desc),
               marked as (
                   insert into events_pruned as p (tenant_id, xid, id) select * from last
                   on conflict (tenant_id) do update set xid = excluded.xid, id = excluded.id
                   where (p.xid, p.id) < (excluded.xid, excluded.id))
               select count(*) from gone""",
            cutoff, batch)
