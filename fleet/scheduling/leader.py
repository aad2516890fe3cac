"""Which Fleet node schedules: leadership through a PostgreSQL advisory lock, fenced by an epoch.

The leader holds `pg_try_advisory_lock(LEADER_LOCK_ID)` on a connection of its own for as long
as it leads. PostgreSQL releases the lock when that connection or its process dies, and a
follower, trying every `retry_s`, takes over within seconds. The leader also checks its
connection every `check_s` and steps down when it is gone.

A deposed leader may not have noticed yet, so each new leader bumps the epoch in
`scheduler_leadership`, and jobs call `Leadership.fence` first thing in their transaction: it
reads the epoch FOR SHARE and refuses a stale one. The new leader's bump waits for runs of the
old epoch still in flight, so the two never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import asyncpg
import structlog

from fleet.db import Database
from fleet.metrics import SCHEDULER_LEADER
from fleet.supervision import running

log = structlog.get_logger(__name__)

# Arbitrary but fixed, next to the migration lock (…_01): every node contends for the same id.
LEADER_LOCK_ID = 0x666C656574_02
RETRY_S = 2.0
CHECK_S = 1.0


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class NotLeader(Exception):
    """This node's leadership ended; whatever it was doing must not commit."""


@dataclass(frozen=True)
class Leadership:
    node: str
    epoch: int
    # The connection holding the lock; also usable for LISTEN while leading.
    connection: asyncpg.Connection

    async def fence(self, conn: asyncpg.Connection) -> None:
        """Raise NotLeader unless this leadership is still current (call inside the job's transaction)."""
        epoch = await conn.fetchval("select fleet_scheduler_epoch()")
        if epoch != self.epoch:
            raise NotLeader(f"node {self.node} led epoch {self.epoch}; epoch {epoch} has begun")


Lead = Callable[[Leadership], AbstractAsyncContextManager[None]]


def together(*leads: Lead) -> Lead:
    """One lead that runs several jobs' leads for the same term (started in order, stopped in reverse)."""
    @contextlib.asynccontextmanager
    async def lead(leadership: Leadership) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for one in leads:
                await stack.enter_async_context(one(leadership))
            yield
    return lead


def every(interval_s: float, job: Callable[[Leadership], Awaitable[object]], name: str) -> Lead:
    """A lead that runs `job` at once and then every `interval_s` for as long as the term lasts.

    A job that finds it is no longer leader ends quietly; any other failure is logged and the
    next run tries again (the database may be away, or it is our bug: either way the term goes on).
    """
    async def repeat(leadership: Leadership) -> None:
        while True:
            try:
                await job(leadership)
            except NotLeader as exc:
                log.info("job refused: no longer leader", job=name, reason=str(exc))
                return
            except Exception:  # noqa: BLE001 - see the docstring
                log.exception("scheduled job failed; the next run retries", job=name)
            await asyncio.sleep(interval_s)

    @contextlib.asynccontextmanager
    async def lead(leadership: Leadership) -> AsyncIterator[None]:
        async with running(repeat(leadership), name):
            yield
    return lead


class LeaderElection:
    """Runs `lead(leadership)` while this node is the leader; otherwise keeps trying to become it."""

    def __init__(self, db: Database, node: str | None = None, *, retry_s: float = RETRY_S,
                 check_s: float = CHECK_S, lock_id: int = LEADER_LOCK_ID) -> None:
        self.db = db
        self.node = node or node_name()
        self.retry_s = retry_s
        self.check_s = check_s
        self.lock_id = lock_id
        self.leadership: Leadership | None = None
        self.terms = 0

    async def run(self, lead: Lead) -> None:
        interrupted = False
        while True:
            try:
                await self._term(lead)
                interrupted = False
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                    TimeoutError) as exc:
                # Expected when the database restarts or our connection is cut; the loop retries.
                # Said once per outage, not once per attempt.
                (log.debug if interrupted else log.info)(
                    "scheduler election interrupted", node=self.node, error=repr(exc))
                interrupted = True
            except Exception:  # noqa: BLE001 - our bug; keep the node serving and try again
                log.exception("scheduler leadership failed", node=self.node)
            await asyncio.sleep(self.retry_s)

    async def _term(self, lead: Lead) -> None:
        """One attempt: take the lock, lead until the connection fails, then let go."""
        async with self.db.pool.acquire() as conn:
            if not await conn.fetchval("select pg_try_advisory_lock($1)", self.lock_id):
                return
            epoch = None
            try:
                epoch = await conn.fetchval(
                    """update scheduler_leadership set epoch = epoch + 1, node = $1, elected_at = now()
                       returning epoch""", self.node)
                self.leadership = Leadership(self.node, epoch, conn)
                self.terms += 1
                SCHEDULER_LEADER.set(1)
                log.info("became scheduler leader", node=self.node, epoch=epoch)
                async with lead(self.leadership):
                    await self._hold(conn)
            finally:
                self.leadership = None
                SCHEDULER_LEADER.set(0)
                log.info("scheduler leadership ended", node=self.node, epoch=epoch)
                await self._let_go(conn)

    async def _let_go(self, conn: asyncpg.Connection) -> None:
        """Release the lock so that a follower takes over at once. The pool does not reset
        connections (fleet.db), so a lock still held here would outlive this term on a pooled
        connection: if unlocking fails or is cancelled (shutdown), the connection is closed
        instead, which releases the lock with it. It may be dead already (often why we are here)."""
        if conn.is_closed():
            return
        unlocked = False
        try:
            async with asyncio.timeout(5):
                unlocked = await conn.fetchval("select pg_advisory_unlock($1)", self.lock_id)
        except Exception:  # noqa: BLE001 - closing the connection below releases the lock anyway
            pass
        finally:
            if not unlocked:
                conn.terminate()

    async def _hold(self, conn: asyncpg.Connection) -> None:
        """Wait as long as the lock's connection answers; raise when it stops."""
        while True:
            await asyncio.sleep(self.check_s)
            async with asyncio.timeout(max(self.check_s * 5, 1.0)):
                await conn.fetchval("select 1")
