"""The registration follow-up pacer: FIFO under a token bucket and a concurrency cap, dropping nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from uuid import uuid4

import pytest

from fleet.metrics import REGISTRATION_FOLLOWUPS
from protocols.lwm2m.pacing import Followup, FollowupPacer, Pacing


def keep_latest(_held, later):
    return later


def test_one_starts_per_token_oldest_first():
    pacing = Pacing(10.0, 100, burst=1, now=0.0)
    for key in "abc":
        assert pacing.offer(key, key.upper(), keep_latest)
    assert pacing.take(0.0) == ("a", "A")
    assert pacing.take(0.0) is None  # the bucket is empty
    assert pacing.delay(0.0) == pytest.approx(0.1)
    assert pacing.take(0.05) is None
    assert pacing.take(0.1) == ("b", "B")
    assert pacing.take(0.3) == ("c", "C")
    assert pacing.take(10.0) is None and pacing.delay(10.0) is None  # nothing waits
    assert pacing.running == 3


def test_the_burst_is_a_second_of_the_rate():
    pacing = Pacing(5.0, 100, now=0.0)
    for n in range(8):
        pacing.offer(n, n, keep_latest)
    assert [pacing.take(0.0) for _ in range(6)][-1] is None
    assert pacing.waiting == 3


def test_the_cap_holds_until_one_finishes():
    pacing = Pacing(0, 2, now=0.0)  # no rate: only the cap
    for n in range(3):
        pacing.offer(n, n, keep_latest)
    assert pacing.take(0.0) == (0, 0) and pacing.take(0.0) == (1, 1)
    assert pacing.take(0.0) is None
    assert pacing.delay(0.0) is None  # tokens cannot help: a slot must free
    pacing.finished()
    assert pacing.take(0.0) == (2, 2)


def test_a_key_offered_again_while_waiting_is_merged_in_its_place():
    pacing = Pacing(1.0, 10, burst=1, now=0.0)
    assert pacing.offer("a", 1, keep_latest)
    assert pacing.offer("b", 2, keep_latest)
    assert not pacing.offer("a", 3, lambda held, later: held + later)
    assert pacing.waiting == 2
    assert pacing.take(0.0) == ("a", 4)
    # Once started, a new offer for the key is a follow-up of its own.
    assert pacing.offer("a", 5, keep_latest)
    assert pacing.waiting == 2


def test_nothing_is_dropped_however_many_wait():
    pacing = Pacing(100.0, 5, now=0.0)
    for n in range(1000):
        pacing.offer(n, n, keep_latest)
    started, now = [], 0.0
    while pacing.waiting:
        while (taken := pacing.take(now)) is not None:
            started.append(taken[1])
        for _ in range(pacing.running):
            pacing.finished()
        now += pacing.delay(now) or 0.001
    assert started == list(range(1000))
    assert now == pytest.approx(9.0, abs=0.01)  # a burst of 100, then 900 at 100 a second (fake clock)


def registration(device_id, endpoint="light-1"):
    return SimpleNamespace(device_id=device_id, endpoint=endpoint)


def test_a_merged_followup_is_the_latest_registration_and_the_full_work():
    device = uuid4()
    first, second = registration(device, "a"), registration(device, "b")
    assert Followup(first, "s1", False).merged(Followup(second, "s2", True)) == Followup(second, "s2", False)
    assert Followup(first, "s1", True).merged(Followup(second, "s2", True)).update is True


def counted(outcome: str) -> float:
    return REGISTRATION_FOLLOWUPS.labels(outcome)._value.get()


async def test_a_device_registering_again_while_waiting_gets_one_followup():
    release = asyncio.Event()
    done: list[Followup] = []
    started = asyncio.Event()

    async def work(followup: Followup) -> None:
        started.set()
        await release.wait()
        done.append(followup)

    pacer = FollowupPacer(work, rate_per_s=1000, concurrency=1)
    merged_before = counted("merged")
    busy, waiting = uuid4(), uuid4()
    pacer.submit(registration(busy), "s", update=True)
    async with asyncio.timeout(5):
        await started.wait()
    pacer.submit(registration(waiting, "first"), "s1", update=False)
    pacer.submit(registration(waiting, "again"), "s2", update=True)
    assert (pacer.waiting, pacer.running) == (1, 1)
    assert counted("merged") == merged_before + 1
    release.set()
    async with asyncio.timeout(5):
        while len(done) < 2 or pacer.running:
            await asyncio.sleep(0.01)
    assert [(f.registration.device_id, f.session, f.update) for f in done] == [
        (busy, "s", True), (waiting, "s2", False)]
    await pacer.close()


async def test_stopping_lets_go_of_what_waits_and_counts_it():
    async def work(_followup) -> None:
        await asyncio.Event().wait()

    pacer = FollowupPacer(work, rate_per_s=1000, concurrency=1)
    abandoned, cancelled = counted("abandoned"), counted("cancelled")
    for _ in range(3):
        pacer.submit(registration(uuid4()), "s")
    await asyncio.sleep(0)
    await pacer.close()
    assert (counted("abandoned") - abandoned, counted("cancelled") - cancelled) == (2, 1)
    pacer.submit(registration(uuid4()), "s")  # after stopping: the next Register brings it again
    assert pacer.waiting == 0


async def test_a_failing_followup_is_counted_and_the_next_one_runs():
    ran = []

    async def work(followup: Followup) -> None:
        ran.append(followup.registration.endpoint)
        if followup.registration.endpoint == "bad":
            raise RuntimeError("boom")

    pacer = FollowupPacer(work, rate_per_s=1000, concurrency=1)
    failed = counted("failed")
    pacer.submit(registration(uuid4(), "bad"), "s")
    pacer.submit(registration(uuid4(), "good"), "s")
    async with asyncio.timeout(5):
        while len(ran) < 2 or pacer.running:
            await asyncio.sleep(0.01)
    assert ran == ["bad", "good"] and counted("failed") == failed + 1
    await pacer.close()
