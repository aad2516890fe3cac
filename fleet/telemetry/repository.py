"""SQL for telemetry: COPY of data points, the latest-state upsert, series and partitions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from uuid import UUID

import asyncpg

from fleet.telemetry.models import (POINT_COLUMNS, PointRecord, SeriesBucket, SeriesPoint,
                                    SeriesQuery, stored_value)


# How an upsert of device_state (aliased s) moves a (device, path) forward: never back in time.
_STATE_FORWARD = """
    on conflict (device_id, path) do update
        set time = excluded.time, v_num = excluded.v_num, v_text = excluded.v_text,
            v_bool = excluded.v_bool, updated_at = now()
        where s.time <= excluded.time"""


class TelemetryRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def append(self, points: Sequence[PointRecord]) -> None:
        await self.conn.copy_records_to_table("telemetry", records=points, columns=POINT_COLUMNS)

    async def prepare_staging(self) -> None:
        """A per-connection scratch table for `append_staged`; emptied by every commit."""
        await self.conn.execute(
            """create temporary table if not exists telemetry_batch (
                   tenant_id uuid not null, device_id uuid not null, time timestamptz not null,
                   path text not null, v_num double precision, v_text text, v_bool boolean)
               on commit delete rows""")

    async def append_staged(self, points: Sequence[PointRecord]) -> None:
        """COPY a batch once, then append it and move each (device, path) to its newest value,
        all inside PostgreSQL. Cheaper for us than `append` + `upsert_state`: no arrays to
        encode and no newest-per-key pass in Python (bench/ingest/writes.py measures both).

        DISTINCT ON ... ORDER BY device_id, path upserts in key order, so concurrent writers
        take row locks in the same order and cannot deadlock.
        """
        await self.conn.copy_records_to_table("telemetry_batch", records=points, columns=POINT_COLUMNS)
        await self.conn.execute(
            """with appended as (
                   insert into telemetry (tenant_id, device_id, time, path, v_num, v_text, v_bool)
                   select tenant_id, device_id, time, path, v_num, v_text, v_bool from telemetry_batch)
               insert into device_state as s (tenant_id, device_id, time, path, v_num, v_text, v_bool)
               select distinct on (device_id, path) tenant_id, device_id, time, path, v_num, v_text, v_bool
               from telemetry_batch order by device_id, path, time desc
               """ + _STATE_FORWARD)

    async def record(self, points: Sequence[PointRecord]) -> None:
        """Append a few points and move their (device, path) forward, in one statement: for
        values Fleet itself set (a written dimming level), committed with the command's outcome.
        Upserts in key order, like `append_staged`, so concurrent writers cannot deadlock."""
        if not points:
            return
        columns = list(zip(*points, strict=True))
        await self.conn.execute(
            """with written as (
                   select * from unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[],
                                        $5::float8[], $6::text[], $7::bool[])
                          as w(tenant_id, device_id, time, path, v_num, v_text, v_bool)),
               appended as (
                   insert into telemetry (tenant_id, device_id, time, path, v_num, v_text, v_bool)
                   select * from written)
               insert into device_state as s (tenant_id, device_id, time, path, v_num, v_text, v_bool)
               select distinct on (device_id, path) * from written order by device_id, path, time desc
               """ + _STATE_FORWARD,
            *[list(c) for c in columns])

    async def upsert_state(self, latest: Sequence[PointRecord]) -> None:
        """Move each (device, path) forward to its newest value; `latest` must be sorted by key.

        Sorted keys give every concurrent writer the same lock order, so they cannot deadlock.
        """
        if not latest:
            return
        columns = list(zip(*latest, strict=True))
        await self.conn.execute(
            """insert into device_state as s (tenant_id, device_id, time, path, v_num, v_text, v_bool)
               select * from unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[],
                                    $5::float8[], $6::text[], $7::bool[])
               """ + _STATE_FORWARD,
            *[list(c) for c in columns])

    async def state(self, tenant_id: UUID, device_id: UUID) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select path, time, v_num, v_text, v_bool from device_state
               where tenant_id = $1 and device_id = $2""", tenant_id, device_id)

    async def series(self, tenant_id: UUID, query: SeriesQuery) -> list[SeriesPoint]:
        rows = await self.conn.fetch(
            """select time, v_num, v_text, v_bool from telemetry
               where tenant_id = $1 and device_id = $2 and path = $3 and time >= $4 and time < $5
               order by time limit $6""",
            tenant_id, query.device_id, query.path, query.since, query.until, query.limit)
        return [SeriesPoint(r["time"], stored_value(r["v_num"], r["v_text"], r["v_bool"])) for r in rows]

    async def buckets(self, tenant_id: UUID, query: SeriesQuery) -> list[SeriesBucket]:
        rows = await self.conn.fetch(
            """select date_bin(make_interval(mins => $6), time, $4) as start,
                      avg(v_num) as avg, min(v_num) as min, max(v_num) as max, count(*) as count
               from telemetry
               where tenant_id = $1 and device_id = $2 and path = $3 and time >= $4 and time < $5
               group by 1 order by 1 limit $7""",
            tenant_id, query.device_id, query.path, query.since, query.until,
            query.bucket_minutes, query.limit)
        return [SeriesBucket(r["start"], r["avg"], r["min"], r["max"], r["count"]) for r in rows]

    async def ensure_partitions(self, first_day: date, days: int) -> int:
        # One node at a time (the lock is the seal's too): two creating and sealing at once
        # would each wait on a partition the other had just locked.
        await self.conn.execute("select pg_advisory_xact_lock(hashtext('fleet_telemetry_partitions'))")
        created = await self.conn.fetchval("select fleet_ensure_telemetry_partitions($1, $2)", first_day, days)
        if created:
            # New partitions join the wall before the transaction that made them commits.
            await self.conn.execute("select fleet_seal_telemetry_partitions()")
        return created

    async def drop_before(self, cutoff: date) -> int:
        return await self.conn.fetchval("select fleet_drop_telemetry_before($1)", cutoff)

    async def count_points(self, device_id: UUID) -> int:
        return await self.conn.fetchval("select count(*) from telemetry where device_id = $1", device_id)
