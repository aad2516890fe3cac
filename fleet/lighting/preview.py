"""The preview: the level a light, or each light of a group, has at a time, and the next 48 hours."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID
from zoneinfo import ZoneInfo

from fleet.access.models import Permission, Principal
from fleet.db import Database
from fleet.errors import FieldError, NotFound, ValidationFailed
from fleet.lighting import validation
from fleet.lighting.astro import NightSun, night_sun
from fleet.lighting.night import night_of
from fleet.lighting.plan import LightPlan, clusters, load_schedule, plan_lights
from fleet.lighting.records import Assignment
from fleet.lighting.repository import LightingRepository
from fleet.lighting.schedule import LevelDecision, Transition
from fleet.registry.models import DeviceFilter
from fleet.registry.repository import DeviceRepository
from fleet.registry.service import require

PREVIEW_HORIZON = dt.timedelta(hours=48)


@dataclass(frozen=True, slots=True)
class LightsPreview:
    """Lights of a preview that share one schedule: their level at `at` and what follows.

    Lights no calendar governs have a level only while an override covers them; those no
    override covers either come as one more entry without a level."""

    device_ids: list[UUID]
    calendar_id: UUID | None
    assignment: Assignment | None
    level: LevelDecision | None
    transitions: list[Transition]
    sun: NightSun | None  # of the night `at` falls in


@dataclass(frozen=True, slots=True)
class Preview:
    at: dt.datetime
    until: dt.datetime
    timezone: str
    device_id: UUID | None
    group_id: UUID | None
    lights: list[LightsPreview]


class PreviewService:
    def __init__(self, db: Database, *, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.db = db
        self.clock = clock

    async def preview(self, principal: Principal, *, device_id: UUID | None = None, group_id: UUID | None = None,
                      at: dt.datetime | str | None = None) -> Preview:
        """As the scheduler would decide it: same calendar choice, overrides and sun."""
        require(principal, Permission.READ)
        if (device_id is None) == (group_id is None):
            raise ValidationFailed("invalid preview", [FieldError(
                "device_id", "give exactly one of device_id or group_id")])
        at = validation.instant(at, "at", principal.tenant_timezone) or self.clock()
        until = at + PREVIEW_HORIZON
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            if device_id is not None:
                ids = [device_id]
            else:
                ids = await DeviceRepository(conn).ids_matching(principal.tenant_id, DeviceFilter(group_id=group_id))
            lights = await LightingRepository(conn).lights(principal.tenant_id, ids)
            if device_id is not None and not lights:
                raise NotFound(f"streetlight {device_id} not found")
            schedule = await load_schedule(conn, principal.tenant_id, principal.tenant_timezone,
                                           at - dt.timedelta(days=1), until)
        plans = plan_lights(schedule, lights)
        zone = ZoneInfo(schedule.timezone)
        previews = [_entry(cluster.plans, cluster.level_at(at), cluster.transitions(at, until),
                           night_sun(cluster.location, schedule.timezone, night_of(at, zone)))
                    for cluster in clusters(schedule, plans)]
        unscheduled = [plan for plan in plans if plan.calendar_id is None and not plan.overrides]
        if unscheduled:
            previews.append(_entry(unscheduled, None, [], None))
        return Preview(at, until, schedule.timezone, device_id, group_id, previews)


def _entry(plans: list[LightPlan], level: LevelDecision | None, transitions: list[Transition],
           sun: NightSun | None) -> LightsPreview:
    first = plans[0]
    return LightsPreview([p.light.device_id for p in plans], first.calendar_id, first.assignment,
                         level, transitions, sun)
