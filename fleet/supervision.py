"""Supervised long-lived tasks, and the health every component of a process reports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger("fleet.supervision")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# A task that ran this long before crashing was healthy: its next crash starts the back-off anew.
STEADY_S = 60.0
DATABASE = "database"
# How long after the database was lost a success may still come from its dying server.
SETTLE_S = 1.0


class Health:
    """Which components of this process are unhealthy, and why; `/readyz` names them.

    Changes are logged once each (not per failed attempt), so a repeating condition such as a
    lost database costs two lines however long it lasts.
    """

    def __init__(self, *, settle_s: float = SETTLE_S) -> None:
        self._problems: dict[str, str | None] = {}
        self.settle_s = settle_s
        self._database_lost_at = 0.0

    def report(self, component: str, problem: str | None) -> None:
        """`problem` None: healthy. Only a change of state is logged."""
        before = self._problems.get(component)
        self._problems[component] = problem
        if (before is None) == (problem is None):
            return
        if component == DATABASE:
            if problem is None:
                log.info("database back")
            else:
                log.warning("database lost", reason=problem)
        elif problem is None:
            log.info("component healthy again", component=component)

    def database_lost(self, exc: BaseException) -> None:
        if self._problems.get(DATABASE) is None:
            self._database_lost_at = time.monotonic()
        self.report(DATABASE, f"unreachable: {type(exc).__name__}")

    def database_back(self) -> None:
        """A statement succeeded. Right after a loss, one may still succeed on a connection
        whose server is dying; only a success after `settle_s` counts (those who call this
        keep calling it), so that one outage is one "lost" and one "back"."""
        if (self._problems.get(DATABASE) is not None
                and time.monotonic() - self._database_lost_at >= self.settle_s):
            self.report(DATABASE, None)

    @property
    def database_ok(self) -> bool:
        return self._problems.get(DATABASE) is None

    def components(self) -> dict[str, str]:
        """Every component this process knows of: "ok" or what is wrong with it."""
        return {name: problem or "ok" for name, problem in sorted(self._problems.items())}

    def unhealthy(self) -> dict[str, str]:
        return {name: problem for name, problem in sorted(self._problems.items()) if problem}


class Supervisor:
    """Runs long-lived tasks; a crash is logged once with its traceback and the task is
    started again after an exponential back-off (BACKOFF_FIRST_S doubling to BACKOFF_MAX_S).

    What cannot be restarted in place (the HTTP server, the CoAP socket) is not run here:
    when it ends, the process stops non-zero (`api.runtime.until_stopped`).
    """

    def __init__(self, health: Health, *, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.health = health
        self.first_s = first_s
        self.max_s = max_s
        self._sleep = sleep
        self._tasks: dict[str, asyncio.Task] = {}
        self.restarts: dict[str, int] = {}

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task:
        task = asyncio.create_task(self._keep(name, run), name=name)
        self._tasks[name] = task
        return task

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        delay = self.first_s
        streak = 0
        self.health.report(name, None)
        while True:
            started = loop.time()
            try:
                await run()
                raise RuntimeError("returned, but it should run until cancelled")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever it was, the task must come back
                if loop.time() - started >= STEADY_S:
                    delay, streak = self.first_s, 0
                streak += 1
                if streak == 1:
                    log.error("component crashed", component=name, exc_info=exc)
                else:
                    # The traceback was logged at the first crash of this streak.
                    log.warning("component crashed again", component=name, crashes=streak,
                                error=repr(exc), retry_in_s=delay)
                self.health.report(name, f"crashed ({type(exc).__name__}); restarting in {delay:g} s")
            await self._sleep(delay)
            delay = min(delay * 2, self.max_s)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.health.report(name, None)


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, object], name: str | None = None) -> AsyncIterator[asyncio.Task]:
    """Run `work` as a task for as long as the `async with` block lasts; cancelled and awaited
    when it ends, so nothing of it outlives its owner (a leadership term, an app's lifespan)."""
    task = asyncio.create_task(work, name=name)
    try:
        yield task
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            # The task's own cancellation ends here; its owner's (cancelled while waiting for
            # it) must not, or the owner runs on when it was told to stop.
            if asyncio.current_task().cancelling():
                raise
