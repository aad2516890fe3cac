"""Stopping: a long-lived loop that is cancelled stops, even when its wait ends at that moment."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from fleet.campaigns import rollout
from fleet.campaigns.rollout import CampaignJobs
from fleet.scheduling.leader import LeaderElection
from fleet.supervision import running

ROOT = Path(__file__).resolve().parents[2]


def test_no_asyncio_wait_for_in_fleet():
    """On Python 3.11, asyncio.wait_for returns the result when the awaited thing finishes in the
    same loop iteration as the cancellation, and drops the cancellation: a loop around it runs on
    (`fleet demo` hung on Ctrl-C 1 stop in 13). `async with asyncio.timeout(...)` keeps it."""
    found = []
    for package in ("api", "fleet", "protocols", "simulators"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute) and node.attr == "wait_for" \
                        and isinstance(node.value, ast.Name) and node.value.id == "asyncio":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


class AnsweringConnection:
    """A lock connection whose `select 1` answers when the test says."""

    def __init__(self) -> None:
        self.checks = 0
        self.answer: asyncio.Future[int] | None = None
        self.asked = asyncio.Event()

    async def fetchval(self, _query: str) -> int:
        self.checks += 1
        self.answer = asyncio.get_running_loop().create_future()
        self.asked.set()
        return await self.answer


async def test_a_leader_stopped_as_its_check_answers_stops():
    conn = AnsweringConnection()
    hold = asyncio.create_task(LeaderElection(None, check_s=0.001)._hold(conn))  # type: ignore[arg-type]
    await conn.asked.wait()
    # The answer is in (its wake-up queued) when the stop comes, in the same loop iteration.
    conn.answer.set_result(1)
    hold.cancel()
    await asyncio.wait([hold], timeout=5)
    assert hold.cancelled() and conn.checks == 1


class WatchedEvent(asyncio.Event):
    """An event that says when someone waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = asyncio.Event()

    async def wait(self) -> bool:
        self.waited.set()
        return await super().wait()


async def test_the_rollout_stopped_as_an_event_wakes_it_stops(monkeypatch):
    """The hang of `fleet demo` on Ctrl-C: the rollout waits on the events channel's
    notifications between passes; one came as its term ended, and it ran on for ever."""
    monkeypatch.setattr(rollout, "MIN_GAP_S", 0)
    jobs = CampaignJobs(None, download_base_uri="coap://127.0.0.1")  # type: ignore[arg-type]
    passes = 0

    async def tick(_leadership: object = None) -> None:
        nonlocal passes
        passes += 1

    jobs.tick = tick  # type: ignore[method-assign]
    jobs._wake = WatchedEvent()
    repeat = asyncio.create_task(jobs._repeat(None))  # type: ignore[arg-type]
    await jobs._wake.waited.wait()
    jobs._wake.set()  # a notification, in the same loop iteration as the stop
    repeat.cancel()
    await asyncio.wait([repeat], timeout=5)
    assert repeat.cancelled() and passes == 1


async def test_running_keeps_its_owners_cancellation():
    started, stopping, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopping.set()
            await release.wait()  # slow to stop: its owner is cancelled meanwhile

    async def owner() -> None:
        async with running(work()):
            await started.wait()
        await asyncio.Event().wait()  # only reached if the cancellation below was lost

    task = asyncio.create_task(owner())
    await stopping.wait()
    task.cancel()
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
