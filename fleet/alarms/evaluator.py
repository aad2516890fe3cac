"""Judging committed telemetry against the alarm rules as it arrives, off the ingest path.

The telemetry writer hands over each batch right after its COMMIT (`committed`), so a refused
value never raises an alarm. That call only files the points rules read, newest per (device,
path), in a bounded dict: ingest never waits for rules. A task (`run`) takes what is waiting,
loads the context of those devices set-based (kind, place, nominal wattage, thresholds, and
latest values of the paths rules read) with a short time-to-live, and the lights' lighting
targets afresh on every batch (a push moves thousands at once), runs the
rules of each device's kind that read a path it reported, and hands the findings to the sink
(AlarmService.apply).

Across nodes: a device's reports may reach any node. Each context load also reads the latest
values from device_state, so a value another node committed is seen within CONTEXT_TTL_S; the
value *before* the latest one (for meters and rates of rise) is what this node last saw, which
for a counter that only grows is still a fair comparison.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from uuid import UUID

import structlog

from fleet.alarms.models import Finding
from fleet.alarms.rules.kinds import KEEP_PREVIOUS, WATCHED, judge
from fleet.alarms.rules.models import DeviceContext, FindingSink, Observed, SettingsProvider, Value
from fleet.alarms.rules.repository import RulesRepository
from fleet.alarms.settings import DEFAULTS
from fleet.db import Database
from fleet.db.availability import database_away
from fleet.telemetry.models import PointRecord, stored_value

log = structlog.get_logger(__name__)

# How long a device's context and thresholds are trusted: a settings change takes effect
# within this, without a restart (lighting targets are read on every batch).
CONTEXT_TTL_S = 30.0
# (device, path) pairs waiting to be judged; beyond this new pairs are dropped (and counted)
# rather than slowing ingest. A pair already waiting just takes the newer value.
MAX_WAITING = 200_000
# Devices whose latest values (and context) this node keeps; the oldest are forgotten beyond it.
MAX_DEVICES = 500_000
DROP_WARNING_S = 10.0
# A condition found absent again is handed on at most this often per (device, type): most
# devices are fine most of the time, and the lifecycle needs absence only to clear an alarm
# (after clear_after_minutes) or to prove a repair, both of which may come this much later.
# A present finding always goes on, and the next absence after it too.
ABSENT_REPEAT_S = 60.0
_TIME = itemgetter(2)  # a PointRecord's time
# A batch costs its context check and one apply transaction however few points it holds, and
# a device reporting again meanwhile is judged once, on its newest values: a batch begun less
# than this after the last one waits out the rest. An idle evaluator starts at once; under a
# steady stream an alarm shows up to this much later. bench/alarms on a quiet machine at the
# ingest benchmark's full load (~6,300 Sends/s): 0.5 s gave 97 % of rules-off throughput but a
# p99 from Send to REST of 1.04-1.2 s; 0.2 s 92 % and 0.82-1.06 s. The Send's own ack is
# 0.3 s of that p99 at this load.
GATHER_S = 0.2


class RuleEvaluator:
    def __init__(self, db: Database, sink: FindingSink, *, settings: SettingsProvider | None = None,
                 context_ttl_s: float = CONTEXT_TTL_S, max_waiting: int = MAX_WAITING,
                 absent_repeat_s: float = ABSENT_REPEAT_S, gather_s: float = GATHER_S,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db = db
        self.sink = sink
        self.settings = settings
        self.context_ttl_s = context_ttl_s
        self.max_waiting = max_waiting
        self.absent_repeat_s = absent_repeat_s
        self.gather_s = gather_s
        # What "now" is for the sun, targets and clocks; a simulation's own time in tests.
        self.clock = clock
        self._absent_since: dict[tuple[UUID, str], float] = {}  # when absence was last handed on
        self._waiting: dict[tuple[UUID, str], PointRecord] = {}
        self._wakeup = asyncio.Event()
        self._contexts: dict[UUID, tuple[float, DeviceContext | None]] = {}
        self._observed: dict[UUID, Observed] = {}
        self._warned_at = 0.0
        self.dropped = 0
        self.judged_points = 0
        self.batches = 0
        self.findings = 0

    # -- on the ingest path: as cheap as a set lookup per point -------------------------------

    def committed(self, points: Sequence[PointRecord]) -> None:
        """Called by TelemetryWriter after each COMMIT with the points it made durable."""
        waiting, watched, room = self._waiting, WATCHED, self.max_waiting
        keep = waiting.setdefault
        dropped = 0
        for point in points:
            if point[3] not in watched:
                continue
            key = (point[1], point[3])  # hashing it is most of the cost: once for a new pair
            if len(waiting) < room:
                kept = keep(key, point)
                if kept is not point and kept[2] <= point[2]:
                    waiting[key] = point
                continue
            kept = waiting.get(key)
            if kept is None:
                dropped += 1
            elif kept[2] <= point[2]:
                waiting[key] = point
        if dropped:
            self._dropped(dropped)
        if waiting:
            self._wakeup.set()

    def _dropped(self, count: int) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self._warned_at >= DROP_WARNING_S:
            self._warned_at = now
            log.warning("alarm rules behind: points dropped unjudged", dropped_total=self.dropped)

    @property
    def idle(self) -> bool:
        return not self._waiting

    # -- off the ingest path ------------------------------------------------------------------

    async def run(self) -> None:
        """Judge what is waiting, batch after batch, for ever (run it under a Supervisor)."""
        began = -self.gather_s
        while True:
            await self._wakeup.wait()
            rest = self.gather_s - (time.monotonic() - began)
            if rest > 0:
                await asyncio.sleep(rest)
            began = time.monotonic()
            self._wakeup.clear()
            batch, self._waiting = self._waiting, {}
            try:
                await self.evaluate(list(batch.values()))
            except Exception as exc:  # noqa: BLE001 - the next report of these devices is judged again
                if database_away(exc):
                    log.info("alarm rules skipped a batch: database away", points=len(batch))
                else:
                    log.exception("alarm rules failed on a batch", points=len(batch))

    async def evaluate(self, points: Sequence[PointRecord], now: datetime | None = None) -> list[Finding]:
        """Judge committed points (any order, any devices) and hand the findings to the sink."""
        now = now or self.clock()
        by_device: dict[UUID, list[PointRecord]] = {}
        last_id: UUID | None = None
        group: list[PointRecord] = []
        for point in points:
            # A batch holds each device's points side by side: hash its id once, not per point.
            if point[1] is not last_id:
                last_id = point[1]
                found = by_device.get(last_id)
                if found is None:
                    found = by_device[last_id] = []
                group = found
            group.append(point)
        contexts = await self._contexts_of(list(by_device))
        findings: list[Finding] = []
        for device_id, device_points in by_device.items():
            ctx = contexts.get(device_id)
            if ctx is None:
                continue  # decommissioned, or gone
            seen = self._observed_of(device_id)
            changed = {point[3] for point in device_points}
            if len(changed) < len(device_points):
                device_points.sort(key=_TIME)  # a path twice: its older value first, as `previous`
            latest = seen.latest
            for point in device_points:
                # _record, inlined: this runs for every judged point at the ingest rate
                path = point[3]
                old = latest.get(path)
                if old is not None:
                    if old.time >= point[2]:
                        continue  # already known, or older than what is known
                    if path in KEEP_PREVIOUS:
                        seen.previous[path] = old
                latest[path] = Value(point[2], stored_value(point[4], point[5], point[6]))
            findings.extend(judge(ctx, seen, changed, now))
        findings = self._worth_handing_on(findings)
        self.judged_points += len(points)
        self.batches += 1
        if findings:
            self.findings += len(findings)
            await self.sink(findings)
        return findings

    def _worth_handing_on(self, findings: list[Finding]) -> list[Finding]:
        clock = time.monotonic()
        handed = self._absent_since
        if len(handed) > 4 * MAX_DEVICES:
            handed.clear()  # at worst one extra absence each
        kept = []
        for found in findings:
            key = (found.device_id, found.type)
            if found.present:
                handed.pop(key, None)
            elif clock - handed.get(key, -self.absent_repeat_s) < self.absent_repeat_s:
                continue
            else:
                handed[key] = clock
            kept.append(found)
        return kept

    def _observed_of(self, device_id: UUID) -> Observed:
        seen = self._observed.get(device_id)
        if seen is None:
            if len(self._observed) >= MAX_DEVICES:
                del self._observed[next(iter(self._observed))]
            seen = self._observed[device_id] = Observed()
        return seen

    async def _contexts_of(self, device_ids: list[UUID]) -> dict[UUID, DeviceContext]:
        clock = time.monotonic()
        found: dict[UUID, DeviceContext] = {}
        stale = []
        for device_id in device_ids:
            cached = self._contexts.get(device_id)
            if cached is None or clock - cached[0] > self.context_ttl_s:
                stale.append(device_id)
            elif cached[1] is not None:
                found[device_id] = cached[1]
        lights = [ctx for ctx in found.values() if ctx.kind == "streetlight"]
        if not stale and not lights:
            return found
        async with self.db.system_tx() as conn:
            repository = RulesRepository(conn)
            if lights:
                # Targets move with every dimming push: never judged from the cache.
                targets = await repository.targets([ctx.device_id for ctx in lights])
                for ctx in lights:
                    ctx.target = targets.get(ctx.device_id)
            if not stale:
                return found
            loaded = await repository.contexts(stale)
            latest = await repository.latest([c.device_id for c in loaded], sorted(WATCHED))
        by_tenant: dict[UUID, list[DeviceContext]] = defaultdict(list)
        for ctx in loaded:
            by_tenant[ctx.tenant_id].append(ctx)
        for tenant_id, tenant_contexts in by_tenant.items():
            settings = (await self.settings(tenant_id, [c.device_id for c in tenant_contexts])
                        if self.settings is not None else {})
            for ctx in tenant_contexts:
                ctx.settings = settings.get(ctx.device_id, DEFAULTS)
        # Each entry counts as loaded up to half a TTL earlier than it was: devices first seen
        # together (a node starting under load) then expire spread over half a TTL, instead of
        # all reloading in one batch every TTL, which held that batch's alarms back.
        loaded_at = {device_id: clock - random.random() * self.context_ttl_s / 2 for device_id in stale}
        for device_id in stale:
            self._contexts.pop(device_id, None)  # re-inserted below: the dict stays oldest-first
            if len(self._contexts) >= MAX_DEVICES:
                del self._contexts[next(iter(self._contexts))]
            self._contexts[device_id] = (loaded_at[device_id], None)
        for ctx in loaded:
            self._contexts[ctx.device_id] = (loaded_at[ctx.device_id], ctx)
            found[ctx.device_id] = ctx
            seen = self._observed_of(ctx.device_id)
            for path, value in latest.get(ctx.device_id, {}).items():
                _record(seen, path, value)
        return found


def _record(seen: Observed, path: str, value: Value) -> None:
    """Move a path to a newer value, keeping the one before where rules compare with it."""
    old = seen.latest.get(path)
    if old is not None and old.time >= value.time:
        return  # already known, or older than what is known
    if old is not None and path in KEEP_PREVIOUS:
        seen.previous[path] = old
    seen.latest[path] = value
