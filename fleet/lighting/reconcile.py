"""The scheduler's one job: bring every scheduled light to the level its schedule gives now.

Per city and in one transaction: work out each light's level now, compare it with the level last
commanded (`lighting_targets`), and write WRITE commands (origin "lighting") only for lights
whose level differs, or whose last command expired while the light was away and that has been
heard from since. Targets and commands commit together, so the job is idempotent: running it
twice, on two nodes or after a restart issues nothing new, and a restart catches up by itself.

Runs of one city are serialised by a transaction-level advisory lock; the optional `fence`
(the leader's epoch check, see `fleet.scheduling.leader`) runs first, so a deposed leader's run
waits for nothing and commits nothing.
"""

from __future__ import annotations

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
from fleet.commands.models import MAX_EXPIRY, MAX_TARGET_DEVICES, CommandRequest, Operation, Target
from fleet.commands.repository import CommandRepository
from fleet.commands.service import validate_request
from fleet.db import Database
from fleet.lighting.plan import clusters, load_schedule, plan_lights
from fleet.lighting.repository import LightingRepository

log = structlog.get_logger(__name__)

ORIGIN = "lighting"
LOOK_BACK = dt.timedelta(days=1)
LOOK_AHEAD = dt.timedelta(days=2)
# A command is worth delivering until the light's next transition supersedes it; without one in
# sight (midnight sun), for a day, when the scheduler has long looked again.
DEFAULT_COMMAND_EXPIRY = dt.timedelta(days=1)
MIN_COMMAND_EXPIRY = dt.timedelta(minutes=5)

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
        async with self.db.tenant_tx(tenant.id) as conn:
            if fence is not None:
                await fence(conn)
            await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))",
                               f"lighting:{tenant.id}")
            repo = LightingRepository(conn)
            schedule = await load_schedule(conn, tenant.id, tenant.timezone, now - LOOK_BACK, now + LOOK_AHEAD)
            if not schedule.assignments:
                return ReconcileReport(tenant.id, now, 0, 0)
            plans = plan_lights(schedule, await repo.lights(tenant.id))
            targets = await repo.targets(tenant.id)
            # (level, path) -> [(device, since)], and how long those commands should live
            changes: dict[tuple[int, str], list[tuple[UUID, dt.datetime]]] = defaultdict(list)
            expiry: dict[tuple[int, str], dt.timedelta] = defaultdict(lambda: self.min_command_expiry)
            scheduled = 0
            next_at: dt.datetime | None = None
            for cluster in clusters(schedule, plans):
                decision = cluster.level_at(now)
                upcoming = cluster.next_transition(now)
                if upcoming is not None and (next_at is None or upcoming.at < next_at):
                    next_at = upcoming.at
                lifetime = upcoming.at - now if upcoming is not None else DEFAULT_COMMAND_EXPIRY
                for plan in cluster.plans:
                    scheduled += 1
                    light = plan.light
                    target = targets.get(light.device_id)
                    if (target is not None and target.dimming_level == decision.dimming_level
                            and target.path == light.dimming_path and not target.redeliver):
                        continue
                    key = (decision.dimming_level, light.dimming_path)
                    changes[key].append((light.device_id, decision.since))
                    expiry[key] = max(expiry[key], lifetime)
            batch_ids = []
            for (level, path), lights in sorted(changes.items()):
                for start in range(0, len(lights), MAX_TARGET_DEVICES):
                    chunk = lights[start:start + MAX_TARGET_DEVICES]
                    batch_ids.append(await self._command(conn, tenant, level, path, chunk,
                                                         min(expiry[(level, path)], MAX_EXPIRY)))
            commanded = sum(len(lights) for lights in changes.values())
        report = ReconcileReport(tenant.id, now, scheduled, commanded, batch_ids, next_at)
        if commanded:
            log.info("lighting levels commanded", tenant=tenant.slug, lights=commanded,
                     batches=len(batch_ids), scheduled=scheduled)
        return report

    async def _command(self, conn: asyncpg.Connection, tenant: Tenant, level: int, path: str,
                       lights: list[tuple[UUID, dt.datetime]], expires_in: dt.timedelta) -> UUID:
        device_ids = [device_id for device_id, _since in lights]
        request = CommandRequest(Target(device_ids=tuple(device_ids)), Operation.WRITE, path, level,
                                 expires_in, origin=ORIGIN)
        value = validate_request(request)
        target = {"device_ids": [str(d) for d in device_ids]}
        commands = CommandRepository(conn)
        expires_at = dt.datetime.now(dt.UTC) + expires_in
        batch_id = await commands.insert_batch(tenant.id, Operation.WRITE, path, value, target, device_ids,
                                               None, ORIGIN, expires_at)
        repo = LightingRepository(conn)
        command_ids = await repo.command_ids(batch_id)
        await repo.save_targets(tenant.id, device_ids, [level] * len(lights), [path] * len(lights),
                                [since for _device, since in lights],
                                [command_ids.get(d) for d in device_ids])
        await record(conn, scheduler_principal(tenant), "command.write", "command_batch", batch_id, None,
                     {"path": path, "value": value, "devices": len(device_ids), "origin": ORIGIN})
        return batch_id
