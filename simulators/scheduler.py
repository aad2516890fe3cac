"""One heap of due actions for every simulated device, swept on a short tick.

A task or a loop timer per device (and per retransmission) costs more than the work it guards
once there are ten thousand devices; one heap and one loop keep the per-device cost to a tuple.
Cancelling is lazy: an action checks, when it comes due, whether it still applies.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("simulators.scheduler")

TICK_S = 0.02


class Scheduler:
    def __init__(self, tick_s: float = TICK_S) -> None:
        self.tick_s = tick_s
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._order = itertools.count()
        self.errors = 0

    def at(self, due: float, action: Callable[[Any], None], argument: Any = None) -> None:
        """Run action(argument) once time.monotonic() reaches due."""
        heapq.heappush(self._heap, (due, next(self._order), action, argument))

    def after(self, delay_s: float, action: Callable[[Any], None], argument: Any = None) -> None:
        self.at(time.monotonic() + delay_s, action, argument)

    def __len__(self) -> int:
        return len(self._heap)

    def run_due(self, now: float) -> int:
        heap, pop = self._heap, heapq.heappop
        ran = 0
        while heap and heap[0][0] <= now:
            _, _, action, argument = pop(heap)
            ran += 1
            try:
                action(argument)
            except Exception:  # noqa: BLE001 - one device's bug must not stop the others
                self.errors += 1
                if self.errors <= 10:
                    log.exception("simulated device action failed")
        return ran

    async def run(self) -> None:
        monotonic = time.monotonic
        while True:
            await asyncio.sleep(self.tick_s)
            self.run_due(monotonic())
