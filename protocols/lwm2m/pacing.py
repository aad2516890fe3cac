"""What follows a Register or Update (the /3/0 read, re-observing, claiming the device's commands), paced."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import structlog

from fleet.db.availability import database_away
from fleet.metrics import REGISTRATION_FOLLOWUPS, REGISTRATION_FOLLOWUPS_WAITING, follow
from fleet.registrations.models import Registration
from fleet.supervision import Health
from protocols.lwm2m.sessions import Session

log = structlog.get_logger("fleet.lwm2m.pacing")

# Follow-ups per second a node starts (FLEET_REGISTRATION_FOLLOWUPS, shared by its coap workers):
# 10,000 devices read in 20 s at most, a third of the 60 s. On the 2-core bench machine
# one listener read about 400 a second once its Registers were done, so this rarely holds a lone
# listener back, and 200 or unpaced read a storm of 5,000 as fast (docs/scaling.md).
DEFAULT_RATE_PER_S = 500.0
# Follow-ups under way at once in one listener. It bounds what waits on the database when the
# database is slow (the rate alone would keep starting more), while a device that does not answer
# its read holds a slot for at most the read's ~93 s of retransmissions. A follow-up takes about
# a second under a storm (a read, then four transactions): 128 read 5,000 devices in 36 s on the
# bench machine, 512 in 23 s, with the Registers done in 10-11 s either way.
DEFAULT_CONCURRENCY = 512


_EPSILON = 1e-6


class Pacing:
    """A FIFO of waiting items, one per key, started under a token bucket and a concurrency cap.

    Pure bookkeeping (times are passed in): nothing is ever dropped. An item offered for a key
    that is still waiting is merged into the waiting one, which keeps its place in the queue.
    A rate of 0 or less means no rate limit, only the cap.
    """

    def __init__(self, rate_per_s: float, concurrency: int, *, burst: float | None = None, now: float = 0.0) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.rate = rate_per_s
        self.concurrency = concurrency
        # A second's worth by default: a quiet node starts a few follow-ups at once, unpaced.
        self.burst = max(1.0, burst if burst is not None else rate_per_s)
        self.tokens = self.burst
        self._stamp = now
        self._waiting: dict[Hashable, Any] = {}  # insertion order is the queue's order
        self.running = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def offer(self, key: Hashable, item: Any, merge: Callable[[Any, Any], Any]) -> bool:
        """Queue `item`; False when `key` was waiting already and `merge(waiting, item)` took its place."""
        held = self._waiting.get(key)
        if held is None:
            self._waiting[key] = item
            return True
        self._waiting[key] = merge(held, item)
        return False

    def take(self, now: float) -> tuple[Hashable, Any] | None:
        """The oldest waiting (key, item) if a token and a slot allow it to start now."""
        if not self._waiting or self.running >= self.concurrency:
            return None
        if self.rate > 0:
            self._refill(now)
            if self.tokens < 1 - _EPSILON:  # a timer due at the token's time may fire a hair early
                return None
            self.tokens -= 1
        self.running += 1
        key = next(iter(self._waiting))
        return key, self._waiting.pop(key)

    def finished(self) -> None:
        """One that was taken ended: its slot is free."""
        self.running -= 1

    def delay(self, now: float) -> float | None:
        """Seconds until `take` can start the next one on tokens; None when only a `finished` (a
        slot) or an `offer` can change that."""
        if not self._waiting or self.running >= self.concurrency or self.rate <= 0:
            return None
        self._refill(now)
        return max(0.0, (1 - self.tokens) / self.rate)

    def drain(self) -> list[Any]:
        """Every waiting item, in order, leaving none."""
        items, self._waiting = list(self._waiting.values()), {}
        return items

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now


@dataclass(frozen=True, slots=True)
class Followup:
    registration: Registration
    session: Session
    update: bool  # after an Update: no /3/0 read, no re-observing, only the commands

    def merged(self, later: Followup) -> Followup:
        """A device that registered or updated again while its follow-up waited gets one follow-up:
        for its latest registration (its address now), doing the full work if either asked for it."""
        return Followup(later.registration, later.session, self.update and later.update)


class FollowupPacer:
    """Runs `work(followup)` for each Register and Update under the listener's share of the node's
    budget, oldest first, one waiting follow-up per device. The Register itself was answered
    already: a device whose follow-up waits is registered and its Sends are taken meanwhile."""

    def __init__(self, work: Callable[[Followup], Awaitable[None]], *, rate_per_s: float = DEFAULT_RATE_PER_S,
                 concurrency: int = DEFAULT_CONCURRENCY, health: Health | None = None) -> None:
        self.work = work
        self.health = health or Health()
        self._loop = asyncio.get_running_loop()
        self._pacing = Pacing(rate_per_s, concurrency, now=self._loop.time())
        self._tasks: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        follow(REGISTRATION_FOLLOWUPS_WAITING, self, lambda pacer: pacer.waiting)

    @property
    def waiting(self) -> int:
        return self._pacing.waiting

    @property
    def running(self) -> int:
        return self._pacing.running

    def submit(self, registration: Registration, session: Session, *, update: bool = False) -> None:
        """Queue the follow-up of a Register (or an Update) just answered."""
        if self.closed:
            return
        if not self._pacing.offer(registration.device_id, Followup(registration, session, update), Followup.merged):
            REGISTRATION_FOLLOWUPS.labels("merged").inc()
        self._pump()

    def _pump(self) -> None:
        """Start what the budget allows now; come back when the next token is due."""
        now = self._loop.time()
        while (taken := self._pacing.take(now)) is not None:
            task = self._loop.create_task(self._run(taken[1]))
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        delay = self._pacing.delay(now)
        if delay is not None and self._timer is None:
            self._timer = self._loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._pump()

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._pacing.finished()
        if not self.closed:
            self._pump()

    async def _run(self, followup: Followup) -> None:
        try:
            await self.work(followup)
        except Exception as exc:  # noqa: BLE001 - a task of its own: nobody else would hear of it
            REGISTRATION_FOLLOWUPS.labels("failed").inc()
            if database_away(exc):
                self.health.database_lost(exc)  # done again at the device's next Register or Update
            else:
                log.exception("after-registration work failed", endpoint=followup.registration.endpoint)
            return
        REGISTRATION_FOLLOWUPS.labels("completed").inc()

    async def close(self) -> None:
        """Stop: follow-ups under way are cancelled, those waiting let go (each device's /3/0 read
        and command wake-up happen at its next Register or Update, on whichever node is up)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        abandoned = len(self._pacing.drain())
        if abandoned:
            REGISTRATION_FOLLOWUPS.labels("abandoned").inc(abandoned)
            log.info("registration follow-ups left for the devices' next Register or Update", count=abandoned)
        if self._tasks:
            REGISTRATION_FOLLOWUPS.labels("cancelled").inc(len(self._tasks))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
