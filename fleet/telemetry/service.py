"""Group-committed writes of data points, latest state and series for people, partition upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import asyncpg
import structlog

from fleet.access.models import Permission, Principal
from fleet.db import Database
from fleet.db.availability import broken_connection, database_away, discard, unavailable
from fleet.errors import FieldError, NotFound, PermissionDenied, ValidationFailed
from fleet.metrics import TELEMETRY_BACKLOG, TELEMETRY_COMMIT, TELEMETRY_POINTS, follow
from fleet.objectmodel import CATALOG, ResourcePath
from fleet.supervision import Health, Supervisor
from fleet.telemetry.models import (PointRecord, SeriesBucket, SeriesPoint, SeriesQuery,
                                    StateValue, stored_value)
from fleet.telemetry.repository import TelemetryRepository

log = structlog.get_logger(__name__)

MAX_SERIES_SPAN = timedelta(days=366)
# How often a writer looks again for a database that went away, and waiting writers for room.
PROBE_S = 1.0
# How long a flusher waits for a connection before telling its callers to come back later.
ACQUIRE_S = 10.0


def latest_per_key(points: Sequence[PointRecord]) -> list[PointRecord]:
    """The newest point of each (device, path), sorted by that key for a deadlock-free upsert."""
    newest: dict[tuple[UUID, str], PointRecord] = {}
    for point in points:
        key = (point[1], point[3])
        kept = newest.get(key)
        if kept is None or kept[2] <= point[2]:
            newest[key] = point
    return [newest[k] for k in sorted(newest)]


class TelemetryWriter:
    """Group commit: many callers' points go into one transaction; each caller resumes only
    after its points are committed, so a device's 2.xx always means durable data.

    Each flusher keeps one connection for its lifetime: a batch is then BEGIN, COPY, upsert,
    COMMIT, without the pool's acquire and reset round trips around every commit. A connection
    that failed is dropped, and the next batch takes a fresh one, so a database that went away
    and came back is used again without a restart.

    If a batch fails on a value the database refuses, each caller's points are committed again
    on their own: only the culprit hears of it (ValidationFailed), every other device's data is
    stored. While the database is away, every waiting caller gets Unavailable at once, new
    writes are refused (`backed_up`), and the flushers probe until it is back.
    """

    def __init__(self, db: Database, *, max_batch_points: int = 20_000, flushers: int = 2,
                 max_backlog_points: int | None = None, health: Health | None = None,
                 on_committed: Callable[[list[PointRecord]], None] | None = None) -> None:
        self.db = db
        # Told of every batch right after its COMMIT (the alarm rules): only durable points,
        # never refused ones. It must be quick and must not raise; it runs on the flusher.
        self.on_committed = on_committed
        self.health = health or Health()
        self.max_batch_points = max_batch_points
        # About two commits' worth: beyond that a caller would wait seconds for its answer.
        self.max_backlog_points = max_backlog_points if max_backlog_points is not None else 2 * max_batch_points
        self._pending: list[tuple[Sequence[PointRecord], asyncio.Future[None]]] = []
        self._pending_points = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._loop = asyncio.get_running_loop()
        self._supervisor = Supervisor(self.health)
        self._flushers = [self._supervisor.start(f"telemetry-flusher-{n}", self._flush_forever)
                          for n in range(flushers)]
        self._committing = 0  # batches taken from _pending whose commit has not returned yet
        self.committed_points = 0
        self.batches = 0
        follow(TELEMETRY_BACKLOG, self, lambda writer: writer.waiting_points)

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing being committed."""
        return not self._pending and not self._committing

    @property
    def waiting_points(self) -> int:
        return self._pending_points

    @property
    def backed_up(self) -> bool:
        """More is waiting than a few commits can take, or the database is away: new writes
        should be refused for now."""
        return self._pending_points > self.max_backlog_points or not self.health.database_ok

    def submit(self, points: Sequence[PointRecord]) -> asyncio.Future[None]:
        """Queue points; the future resolves once they are committed, or fails with the reason."""
        future: asyncio.Future[None] = self._loop.create_future()
        if not points:
            future.set_result(None)
            return future
        self._pending.append((points, future))
        self._pending_points += len(points)
        self._wakeup.set()
        return future

    async def write(self, points: Sequence[PointRecord]) -> None:
        """Commit points once there is room: producers that are not Sends (read answers,
        notifications, /3/0) wait while the writer is backed up, so the backlog stays bounded
        by the number of such producers; while the database is away they get Unavailable."""
        if not points:
            return
        while self.backed_up:
            if not self.health.database_ok:
                raise unavailable()
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_S):
                    await self._room.wait()
        await self.submit(points)

    async def close(self) -> None:
        # Let queued and committing writes finish; a request already waiting deserves its answer.
        while not self.idle:
            await asyncio.sleep(0.01)
        await self._supervisor.stop()

    def _take_batch(self) -> list[tuple[Sequence[PointRecord], asyncio.Future[None]]]:
        """The oldest waiting writes, up to max_batch_points (always at least one write)."""
        take, count = 0, 0
        for points, _ in self._pending:
            if take and count + len(points) > self.max_batch_points:
                break
            count += len(points)
            take += 1
        batch = self._pending[:take]
        del self._pending[:take]
        self._pending_points -= count
        if self._pending_points <= self.max_backlog_points:
            self._room.set()
        return batch

    async def _flush_forever(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                if not self._pending:
                    self._wakeup.clear()
                    # Woken by a write; and now and then, to notice a database that came back.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(PROBE_S):
                            await self._wakeup.wait()
                    if not self.health.database_ok and not self._pending:
                        conn = await self._probe(conn)
                    continue
                batch = self._take_batch()
                if self._pending:
                    self._wakeup.set()
                self._committing += 1
                try:
                    conn = await self._commit(conn, batch)
                except BaseException as exc:
                    # Crashing (our bug) or stopping: no caller may wait for ever.
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc if isinstance(exc, Exception) else unavailable())
                    raise
                finally:
                    self._committing -= 1
        finally:
            if conn is not None:
                await self._drop(conn)

    async def _connection(self, conn: asyncpg.Connection | None) -> asyncpg.Connection:
        if conn is None:
            try:
                conn = await self.db.pool.acquire(timeout=ACQUIRE_S)
            except TimeoutError:
                # Every connection is taken: the callers are told to come back (5.03).
                raise unavailable() from None
            try:
                await TelemetryRepository(conn).prepare_staging()
            except BaseException:
                await self._drop(conn, broken=True)
                raise
        return conn

    async def _drop(self, conn: asyncpg.Connection, *, broken: bool = False) -> None:
        if broken:
            await discard(self.db.pool, conn)
        else:
            await self.db.pool.release(conn)

    async def _probe(self, held: asyncpg.Connection | None) -> asyncpg.Connection | None:
        """Whether the database is back: a connection that answers (the held one, if it
        survived, else a fresh one), or None to try again later."""
        conn = held
        try:
            conn = await self._connection(held)
            await conn.fetchval("select 1")
        except Exception as exc:  # noqa: BLE001 - still away: probe later on a fresh connection
            if conn is not None:
                await self._drop(conn, broken=True)
            if not database_away(exc) and held is None:
                log.warning("probing the database failed", error=repr(exc))
            return None
        self.health.database_back()
        return conn

    async def _commit(self, conn: asyncpg.Connection | None,
                      batch: list[tuple[Sequence[PointRecord], asyncio.Future[None]]]) -> asyncpg.Connection | None:
        """Commit a batch and answer its callers; returns the connection worth keeping."""
        points = [p for chunk, _ in batch for p in chunk]
        try:
            conn = await self._connection(conn)
            started = time.perf_counter()
            async with conn.transaction():
                await TelemetryRepository(conn).append_staged(points)
        except Exception as exc:  # noqa: BLE001 - every waiting caller must hear of it
            if database_away(exc) or broken_connection(exc):
                # Its callers are told to retry (5.03), as when the database is away.
                if not broken_connection(exc):
                    self.health.database_lost(exc)
                if conn is not None:
                    await self._drop(conn, broken=True)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(unavailable(exc))
                return None
            if len(batch) > 1:
                # One caller's value may have failed everyone's commit: find it by committing
                # each caller on its own.
                for single in batch:
                    conn = await self._commit(conn, [single])
                return conn
            self._refuse(batch[0][1], exc)
            return conn
        TELEMETRY_COMMIT.observe(time.perf_counter() - started)
        TELEMETRY_POINTS.inc(len(points))
        self.health.database_back()
        self.committed_points += len(points)
        self.batches += 1
        for _, future in batch:
            if not future.done():
                future.set_result(None)
        if self.on_committed is not None:
            try:
                self.on_committed(points)
            except Exception:  # noqa: BLE001 - our bug, but the data is committed and answered
                log.exception("telemetry commit listener failed")
        return conn

    @staticmethod
    def _refuse(future: asyncio.Future[None], exc: Exception) -> None:
        if isinstance(exc, asyncpg.DataError):
            # A value the codecs let through but PostgreSQL cannot store (e.g. U+0000 in text).
            log.warning("telemetry refused by the database", error=str(exc))
            exc = ValidationFailed(f"a value cannot be stored: {exc}")
        else:
            log.error("telemetry commit failed", exc_info=exc)
        if not future.done():
            future.set_exception(exc)


class TelemetryService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def state(self, principal: Principal, device_id: UUID) -> list[StateValue]:
        self._require_read(principal)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            await self._require_device(conn, principal.tenant_id, device_id)
            rows = await TelemetryRepository(conn).state(principal.tenant_id, device_id)
        values = []
        for row in rows:
            described = CATALOG.describe(row["path"])
            values.append(StateValue(
                row["path"], row["time"], stored_value(row["v_num"], row["v_text"], row["v_bool"]),
                described.name if described else None,
                described.object_name if described else None,
                described.units if described else None))
        values.sort(key=lambda v: ResourcePath.parse(v.path).ids)
        return values

    async def series(self, principal: Principal, query: SeriesQuery) -> list[SeriesPoint] | list[SeriesBucket]:
        self._require_read(principal)
        errors = []
        try:
            ResourcePath.parse(query.path)
        except ValueError as exc:
            errors.append(FieldError("path", str(exc)))
        if query.until <= query.since:
            errors.append(FieldError("until", "must be after since"))
        elif query.until - query.since > MAX_SERIES_SPAN:
            errors.append(FieldError("since", "the range may span at most 366 days"))
        if query.bucket_minutes is not None and not 1 <= query.bucket_minutes <= 10_080:
            errors.append(FieldError("bucket_minutes", "must be 1-10080"))
        if errors:
            raise ValidationFailed("invalid series query", errors)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            await self._require_device(conn, principal.tenant_id, query.device_id)
            repo = TelemetryRepository(conn)
            if query.bucket_minutes:
                return await repo.buckets(principal.tenant_id, query)
            return await repo.series(principal.tenant_id, query)

    @staticmethod
    async def _require_device(conn, tenant_id: UUID, device_id: UUID) -> None:
        found = await conn.fetchval("select 1 from devices where tenant_id = $1 and id = $2",
                                    tenant_id, device_id)
        if not found:
            raise NotFound(f"device {device_id} not found")

    @staticmethod
    def _require_read(principal: Principal) -> None:
        if not principal.can(Permission.READ):
            raise PermissionDenied("reading telemetry is not allowed for this key")


class TelemetryMaintenance:
    """Partitions ahead of time and retention behind; safe to run on every node at once."""

    def __init__(self, db: Database, *, days_ahead: int = 7, days_behind: int = 2,
                 retention_days: int = 90) -> None:
        self.db = db
        self.days_ahead = days_ahead
        self.days_behind = days_behind
        self.retention_days = retention_days

    async def run(self, today: date | None = None) -> tuple[int, int]:
        today = today or datetime.now(UTC).date()
        async with self.db.system_tx() as conn:
            repo = TelemetryRepository(conn)
            created = await repo.ensure_partitions(today - timedelta(days=self.days_behind),
                                                   self.days_behind + self.days_ahead + 1)
            dropped = await repo.drop_before(today - timedelta(days=self.retention_days))
        if created or dropped:
            log.info("telemetry partitions maintained", created=created, dropped=dropped)
        return created, dropped
