"""The telemetry write alone, without CoAP: which statement shape costs PostgreSQL least per point.

Every variant writes the same batches of 10-point packs from distinct devices into `telemetry`
and moves `device_state` forward, committed (fsync on) per batch, on one held connection:

- ``copy``: BEGIN, COPY into telemetry, unnest upsert of device_state, COMMIT (the writer's
  shape; 5 round trips including COPY's two) on a connection the writer keeps;
- ``pooled``: the same, but the connection comes from the pool for every batch, as the writer
  first did (asyncpg then resets it on release: one more round trip and four statements);
- ``cte``: one statement, ``with appended as (insert … select from unnest) insert into
  device_state … on conflict``, which commits by itself (1 round trip);
- ``staged``: BEGIN, COPY into a temporary table (ON COMMIT DELETE ROWS), one statement that
  appends it to telemetry and upserts its newest row per (device, path) (DISTINCT ON, in
  PostgreSQL rather than Python), COMMIT: no arrays to encode, no Python dedup.

``--state-fillfactor`` first rewrites device_state with that fillfactor, so more of its
updates are HOT (no index insertions): a candidate migration, measured here.

    python -m bench.ingest.writes [--packs-per-batch 10 50 200] [--batches 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.ingest.cpu import process_cpu_s
from bench.ingest.database import embedded_server, prepare
from fleet.telemetry.models import POINT_COLUMNS
from fleet.telemetry.repository import TelemetryRepository
from fleet.telemetry.service import TelemetryMaintenance, latest_per_key

PATHS = ("/3303/0/5700", "/3435/0/2", "/3304/0/5700", "/3/0/9", "/3435/0/3", "/3325/0/5700",
         "/3301/0/5700", "/3316/0/5700", "/3328/0/5700", "/3330/0/5700")

CTE = """
with appended as (
    insert into telemetry (tenant_id, device_id, time, path, v_num, v_text, v_bool)
    select * from unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::float8[],
                         $6::text[], $7::bool[]))
insert into device_state as s (tenant_id, device_id, time, path, v_num, v_text, v_bool)
select * from unnest($8::uuid[], $9::uuid[], $10::timestamptz[], $11::text[], $12::float8[],
                     $13::text[], $14::bool[])
on conflict (device_id, path) do update
    set time = excluded.time, v_num = excluded.v_num, v_text = excluded.v_text,
        v_bool = excluded.v_bool, updated_at = now()
    where s.time <= excluded.time"""


STAGE = """
create temporary table telemetry_batch (
    tenant_id uuid not null, device_id uuid not null, time timestamptz not null, path text not null,
    v_num double precision, v_text text, v_bool boolean) on commit delete rows"""

STAGED = """
with appended as (
    insert into telemetry (tenant_id, device_id, time, path, v_num, v_text, v_bool)
    select tenant_id, device_id, time, path, v_num, v_text, v_bool from telemetry_batch)
insert into device_state as s (tenant_id, device_id, time, path, v_num, v_text, v_bool)
select distinct on (device_id, path) tenant_id, device_id, time, path, v_num, v_text, v_bool
from telemetry_batch order by device_id, path, time desc
on conflict (device_id, path) do update
    set time = excluded.time, v_num = excluded.v_num, v_text = excluded.v_text,
        v_bool = excluded.v_bool, updated_at = now()
    where s.time <= excluded.time"""


def _batches(tenant: uuid.UUID, devices: list[uuid.UUID], packs: int, count: int, start: datetime):
    step = 0
    for n in range(count):
        points = []
        for p in range(packs):
            device = devices[(n * packs + p) % len(devices)]
            at = start + timedelta(seconds=step)
            step += 1
            points += [(tenant, device, at, path, float(i), None, None) for i, path in enumerate(PATHS)]
        yield points


async def _run(dsn: str, variant: str, tenant, devices, packs: int, count: int,
               start: datetime) -> dict:
    """One variant; start must be later than any earlier run's points, or the upsert's
    `where s.time <= excluded.time` would turn its updates into cheap no-ops."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    conn = await pool.acquire()
    backend = await conn.fetchval("select pg_backend_pid()")
    if variant == "pooled":
        await pool.release(conn)
    if variant == "staged":
        await conn.execute(STAGE)
    batches = list(_batches(tenant, devices, packs, count, start))
    cpu_pg, cpu_me, wall = process_cpu_s(backend), time.process_time(), time.perf_counter()
    try:
        for points in batches:
            latest = latest_per_key(points) if variant != "staged" else None
            if variant == "pooled":
                async with pool.acquire() as pooled, pooled.transaction():
                    repo = TelemetryRepository(pooled)
                    await repo.append(points)
                    await repo.upsert_state(latest)
            elif variant == "copy":
                async with conn.transaction():
                    repo = TelemetryRepository(conn)
                    await repo.append(points)
                    await repo.upsert_state(latest)
            elif variant == "staged":
                async with conn.transaction():
                    await conn.copy_records_to_table("telemetry_batch", records=points, columns=POINT_COLUMNS)
                    await conn.execute(STAGED)
            else:
                await conn.execute(CTE, *[list(c) for c in zip(*points)], *[list(c) for c in zip(*latest)])
    finally:
        elapsed = time.perf_counter() - wall
        used_pg, used_me = process_cpu_s(backend) - cpu_pg, time.process_time() - cpu_me
        if variant != "pooled":
            await pool.release(conn)
        async with pool.acquire() as any_conn:
            await any_conn.execute("truncate telemetry")
        await pool.close()
    rows = count * packs * len(PATHS)
    return {"variant": variant, "packs_per_batch": packs, "rows": rows,
            "rows_per_s": round(rows / elapsed), "pg_us_per_pack": round(used_pg / (count * packs) * 1e6, 1),
            "client_us_per_pack": round(used_me / (count * packs) * 1e6, 1),
            "ms_per_batch": round(elapsed / count * 1000, 2)}


async def _main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-writes-") as work:
        with embedded_server(Path(work)) as dsn:
            prepared = await prepare(dsn, [f"w-{i:06d}" for i in range(args.devices)])
            from fleet.db import Database
            db = await Database.connect(dsn, min_size=1, max_size=1)
            await TelemetryMaintenance(db).run()
            await db.close()
            devices = list(prepared.device_ids.values())
            if args.state_fillfactor:
                conn = await asyncpg.connect(dsn)
                await conn.execute(f"alter table device_state set (fillfactor = {int(args.state_fillfactor)})")
                await conn.execute("vacuum full device_state")
                await conn.close()
            print(f"{'variant':<6} {'packs/batch':>11} {'rows/s':>9} {'PG µs/pack':>11} "
                  f"{'client µs/pack':>15} {'ms/batch':>9}")
            start = datetime.now(UTC)
            for packs in args.packs_per_batch:
                for variant in args.variants * args.repeat:
                    start += timedelta(seconds=packs * args.batches + 1)
                    r = await _run(dsn, variant, prepared.tenant_id, devices, packs, args.batches, start)
                    print(f"{r['variant']:<6} {packs:>11} {r['rows_per_s']:>9} {r['pg_us_per_pack']:>11} "
                          f"{r['client_us_per_pack']:>15} {r['ms_per_batch']:>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest.writes", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--packs-per-batch", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--variants", nargs="+", default=["pooled", "copy", "cte", "staged"],
                        choices=["pooled", "copy", "cte", "staged"])
    parser.add_argument("--repeat", type=int, default=1, help="run the variants this many times, interleaved")
    parser.add_argument("--state-fillfactor", type=int, help="rewrite device_state with this fillfactor first")
    asyncio.run(_main(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
