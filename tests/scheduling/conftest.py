"""Fixtures for scheduler tests: Fleet nodes (each its own pool, election and lighting jobs) and a CoAP listener."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from fleet.db import Database
from fleet.scheduling.leader import LeaderElection
from fleet.scheduling.lighting import LightingJobs
from protocols.lwm2m.listener import Listener, open_listener


@pytest.fixture
async def listener(db) -> AsyncIterator[Listener]:
    async with open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0),
                             sweep_interval_s=0.2) as running:
        yield running


@dataclass
class Node:
    """One Fleet node's scheduler: its own pool, as a separate process would have."""

    name: str
    db: Database
    election: LeaderElection
    jobs: LightingJobs
    task: asyncio.Task

    @property
    def leading(self) -> bool:
        return self.election.leadership is not None

    async def kill_lock_connection(self, admin: Database) -> None:
        """What the database sees when the leader's process dies: its lock session ends."""
        pid = self.election.leadership.connection.get_server_pid()
        async with admin.system_tx() as conn:
            assert await conn.fetchval("select pg_terminate_backend($1)", pid)


@contextlib.asynccontextmanager
async def scheduler_node(dsn: str, name: str, clock: Callable[[], dt.datetime], **options: Any) -> AsyncIterator[Node]:
    db = await Database.connect(dsn, min_size=1, max_size=4)
    election = LeaderElection(db, name, retry_s=0.2, check_s=0.2)
    jobs = LightingJobs(db, clock=clock, **options)
    task = asyncio.create_task(election.run(jobs.lead), name=f"scheduler-{name}")
    try:
        yield Node(name, db, election, jobs, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.close()


async def eventually(check: Callable[[], Awaitable[Any] | Any], *, timeout_s: float = 10.0,
                     interval_s: float = 0.05) -> Any:
    """Poll check (sync or async) until it returns something truthy; fail with its last result."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s (last: {result!r})")
        await asyncio.sleep(interval_s)
