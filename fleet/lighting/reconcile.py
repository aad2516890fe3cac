"""The scheduler's one job: bring every scheduled light to the level its schedule gives now.

Per city: work out each light's level now, compare it with the level last commanded
(`lighting_targets`), and write WRITE commands (origin "lighting") only for lights whose level
differs, or whose level must be sent again (`LightingRepository.targets`: the command expired
while the light was away, the light restarted, or it reports another level).

A light no calendar governs follows overrides only: the first one to cover it records the level
the light last reported as its `resume_level`, and when none covers it any more the scheduler
writes that level back and lets go of the light (its target row goes). Without a reported level
the light stays at the override's last level.

A run decides in one transaction and writes in transactions of COMMIT_LIGHTS lights, each
committing its commands with their targets, so the job is idempotent: running it twice, on two
nodes or after a restart issues nothing new, a run cut short leaves whole chunks, and the next
run catches up by itself. Runs of one city are serialised by a session-level advisory lock held
across those transactions; the optional `fence` (the leader's epoch check, see
`fleet.scheduling.leader`) runs first in each of them, so a deposed leader commits nothing more.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg
import structlog

from fleet.access.models import Principal, Role, Tenant
from fleet.access.repository import TenantRepository
from fleet.audit.service import record
from fleet.commands.models import MAX_EXPIRY, CommandRequest, Operation, Target
from fleet.commands.repository import CommandRepository
from fleet.commands.service import validate_request
from fleet.db import Database
from fleet.lighting.plan import clusters, load_schedule, plan_lights
from fleet.lighting.records import Light
from fleet.lighting.repository import LightingRepository
from fleet.lighting.schedule import LevelDecision

log = structlog.get_logger(__name__)

ORIGIN = "lighting"
LOOK_BACK = dt.timedelta(days=1)
LOOK_AHEAD = dt.timedelta(days=2)
# A command is worth delivering until the light's next transition supersedes it; without one in
# sight (midnight sun), for a day, when the scheduler has long looked again.
DEFAULT_COMMAND_EXPIRY = dt.timedelta(days=1)
MIN_COMMAND_EXPIRY = dt.timedelta(minutes=5)
# Lights whose commands and targets commit together; the dispatcher starts after the first.
COMMIT_LIGHTS = 1_000

Fence = Callable[[asyncpg.Connection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    tenant_id: UUID
    at: dt.datetime
    scheduled_lights: int
    commanded: int
    batch_ids: list[UUID] = field(default_factory=list)
    next_transition_at: dt.datetime | None = None


def scheduler_principal(tenant: Tenant) -> Principal:
    return Principal(tenant.id, tenant.slug, tenant.timezone, Role.ADMIN, None)


class Reconciler:
    def __init__(self, db: Database, *, min_command_expiry: dt.timedelta = MIN_COMMAND_EXPIRY) -> None:
        self.db = db
        self.min_command_expiry = min_command_expiry

    async def tenants(self) -> list[Tenant]:
        async with self.db.system_tx() as conn:
            return await TenantRepository(conn).all()

    async def reconcile_all(self, now: dt.datetime, fence: Fence | None = None) -> list[ReconcileReport]:
        return [await self.reconcile_tenant(tenant, now, fence) for tenant in await self.tenants()]

    async def reconcile_tenant(self, tenant: Tenant, now: dt.datetime,
                               fence: Fence | None = None) -> ReconcileReport:
        """Decide in one transaction, then write commands and targets in transactions of at most
        COMMIT_LIGHTS lights, so the dispatcher starts on the first while the rest are written.
        The city's lock is held across all of them on one connection: runs never interleave."""
        key = f"lighting:{tenant.id}"
        async with self.db.pool.acquire() as conn:
            await conn.execute("select pg_advisory_lock(hashtextextended($1, 0))", key)
            try:
                return await self._reconcile(conn, tenant, now, fence)
            finally:
                await _unlock(conn, key)

    async def _reconcile(self, conn: asyncpg.Connection, tenant: Tenant, now: dt.datetime,
                         fence: Fence | None) -> ReconcileReport:
        async with self.db.tenant_tx(tenant.id, conn=conn) as tx:
            if fence is not None:
                await fence(tx)
            decided = await self._decide(tx, tenant, now)
        if decided is None:
            return ReconcileReport(tenant.id, now, 0, 0)
        changes, expiry, let_go, scheduled, next_at = decided
        writes = [(level, path, lights[start:start + COMMIT_LIGHTS], min(expiry[(level, path)], MAX_EXPIRY))
                  for (level, path), lights in sorted(changes.items())
                  for start in range(0, len(lights), COMMIT_LIGHTS)]
        batch_ids = []
        if let_go:
            async with self.db.tenant_tx(tenant.id, conn=conn) as tx:
                if fence is not None:
                    await fence(tx)
                await LightingRepository(tx).delete_targets(tenant.id, let_go)
        for level, path, lights, expires_in in writes:
            # Targets and commands commit together: a run cut short leaves whole chunks, and the
            # next run (on this leader or the next) finds the rest still to do.
            async with self.db.tenant_tx(tenant.id, conn=conn) as tx:
                if fence is not None:
                    await fence(tx)
                batch_ids.append(await self._command(tx, tenant, level, path, lights, expires_in))
        commanded = sum(len(lights) for lights in changes.values())
        report = ReconcileReport(tenant.id, now, scheduled, commanded, batch_ids, next_at)
        if commanded:
            log.info("lighting levels commanded", tenant=tenant.slug, lights=commanded,
                     batches=len(batch_ids), scheduled=scheduled)
        return report

    async def _decide(self, conn: asyncpg.Connection, tenant: Tenant, now: dt.datetime):
        """What to command: (changes by (level, path), their expiries, targets to let go,
        lights scheduled, next transition), or None when the city has no lighting at all."""
        repo = LightingRepository(conn)
        schedule = await load_schedule(conn, tenant.id, tenant.timezone, now - LOOK_BACK, now + LOOK_AHEAD)
        targets = await repo.targets(tenant.id)
        if not schedule.assignments and not schedule.overrides and not any(
                t.unscheduled for t in targets.values()):
            return None
        plans = plan_lights(schedule, await repo.lights(tenant.id))
        # (level, path) -> the lights to command, and how long those commands should live
        changes: dict[tuple[int, str], list[_Change]] = defaultdict(list)
        expiry: dict[tuple[int, str], dt.timedelta] = defaultdict(lambda: self.min_command_expiry)
        scheduled = 0
        next_at: dt.datetime | None = None
        overridden: list[tuple[Light, LevelDecision, dt.timedelta]] = []  # lights without a calendar
        governed: set[UUID] = set()
        for cluster in clusters(schedule, plans):
            decision = cluster.level_at(now)
            upcoming = cluster.next_transition(now)
            if upcoming is not None and (next_at is None or upcoming.at < next_at):
                next_at = upcoming.at
            lifetime = upcoming.at - now if upcoming is not None else DEFAULT_COMMAND_EXPIRY
            if decision is None:
                continue  # no calendar, and its override has not begun: nothing governs it yet
            for plan in cluster.plans:
                scheduled += 1
                light = plan.light
                governed.add(light.device_id)
                target = targets.get(light.device_id)
                if (target is not None and target.dimming_level == decision.dimming_level
                        and target.path == light.dimming_path and not target.redeliver):
                    continue
                if cluster.calendar is None:
                    overridden.append((light, decision, lifetime))
                    continue
                key = (decision.dimming_level, light.dimming_path)
                changes[key].append(_Change(light.device_id, decision.since))
                expiry[key] = max(expiry[key], lifetime)
        if overridden:
            # The level to go back to is the one the light had before the first override took it.
            before = await repo.reported_levels(tenant.id, [light for light, _d, _l in overridden
                                                            if not _was_unscheduled(targets, light)])
            for light, decision, lifetime in overridden:
                target = targets.get(light.device_id)
                resume = target.resume_level if _was_unscheduled(targets, light) else before.get(light.device_id)
                key = (decision.dimming_level, light.dimming_path)
                changes[key].append(_Change(light.device_id, decision.since, unscheduled=True,
                                            resume_level=resume))
                expiry[key] = max(expiry[key], lifetime)
        # Lights an override held without a calendar, no longer covered: back to their level.
        released = {plan.light.device_id: plan.light for plan in plans}
        let_go: list[UUID] = []
        for device_id, target in targets.items():
            if not target.unscheduled or device_id in governed:
                continue
            light = released.get(device_id)
            if target.resume_level is None or light is None:
                let_go.append(device_id)  # nothing known to go back to, or the light is gone
                continue
            key = (target.resume_level, light.dimming_path)
            changes[key].append(_Change(device_id, now, release=True))
            expiry[key] = max(expiry[key], DEFAULT_COMMAND_EXPIRY)
        return changes, expiry, let_go, scheduled, next_at

    async def _command(self, conn: asyncpg.Connection, tenant: Tenant, level: int, path: str,
                       changes: list[_Change], expires_in: dt.timedelta) -> UUID:
        device_ids = [change.device_id for change in changes]
        request = CommandRequest(Target(device_ids=tuple(device_ids)), Operation.WRITE, path, level,
                                 expires_in, origin=ORIGIN)
        value = validate_request(request)
        target = {"device_ids": [str(d) for d in device_ids]}
        commands = CommandRepository(conn)
        expires_at = dt.datetime.now(dt.UTC) + expires_in
        batch_id, command_ids = await commands.insert_batch_with_ids(
            tenant.id, Operation.WRITE, path, value, target, device_ids, None, ORIGIN, expires_at)
        repo = LightingRepository(conn)
        kept = [change for change in changes if not change.release]
        await repo.save_targets(tenant.id, [c.device_id for c in kept], [level] * len(kept), [path] * len(kept),
                                [c.since for c in kept], [command_ids.get(c.device_id) for c in kept],
                                [c.unscheduled for c in kept], [c.resume_level for c in kept])
        # A light given back its level before the override is no longer the scheduler's.
        await repo.delete_targets(tenant.id, [c.device_id for c in changes if c.release])
        await record(conn, scheduler_principal(tenant), "command.write", "command_batch", batch_id, None,
                     {"path": path, "value": value, "devices": len(device_ids), "origin": ORIGIN})
        return batch_id


@dataclass(frozen=True, slots=True)
class _Change:
    """One light to command in a reconcile, and what its target row becomes."""

    device_id: UUID
    since: dt.datetime
    unscheduled: bool = False  # held by an override, no calendar
    resume_level: int | None = None
    release: bool = False  # the override ended: this command gives back the level before it


async def _unlock(conn: asyncpg.Connection, key: str) -> None:
    """Release the city's lock. The pool does not reset connections (fleet.db), so a lock left
    here would block every later run: if unlocking fails or is cancelled, the connection is
    closed instead, which releases it."""
    unlocked = False
    try:
        async with asyncio.timeout(5):
            unlocked = await conn.fetchval("select pg_advisory_unlock(hashtextextended($1, 0))", key)
    except Exception:  # noqa: BLE001 - closing the connection below releases the lock anyway
        pass
    finally:
        if not unlocked:
            conn.terminate()


def _was_unscheduled(targets: dict[UUID, object], light: Light) -> bool:
    target = targets.get(light.device_id)
    return target is not None and target.unscheduled
