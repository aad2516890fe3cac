"""Which calendar and overrides govern each light, and the clusters of lights that share a schedule.

A light follows at most one calendar. When several assignments cover it, the most specific wins:
1. a group assignment beats a district assignment (a group is an explicit choice of lights);
2. among groups, the one with fewer members wins (it is the more specific);
3. then the newest assignment, then the greatest assignment id, so the choice never depends
   on the order rows come back in.

Overrides act on every light of their scope, also on lights that follow no calendar: a district
in an emergency is lit whatever its schedule. When the override ends, a light with a calendar
resumes it; one without returns to the level it had before (`fleet.lighting.reconcile`).

Lights with the same calendar, the same overrides and the same sun (coordinates rounded as
`fleet.lighting.astro.rounded` does) have the same levels at every instant, so the schedule
is computed once per cluster: a street of lights costs what one light costs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from fleet.errors import NotFound
from fleet.lighting.astro import Location, rounded
from fleet.lighting.models import Calendar, Override
from fleet.lighting.records import Assignment, Light, StoredOverride
from fleet.lighting.repository import LightingRepository
from fleet.lighting.schedule import LevelDecision, Transition, level_at, next_transition, transitions
from fleet.registry.models import DeviceFilter
from fleet.registry.repository import DeviceRepository

# Overrides acting around one instant; beyond this many the newest are kept.
MAX_OVERRIDES = 10_000


@dataclass(frozen=True, slots=True)
class Schedule:
    """A city's lighting setup as of one transaction: what the planner needs, nothing more."""

    timezone: str
    calendars: dict[UUID, Calendar]
    assignments: list[Assignment]
    overrides: list[StoredOverride]
    # Members of every group an assignment or override names.
    group_members: dict[UUID, frozenset[UUID]]


@dataclass(frozen=True, slots=True)
class LightPlan:
    light: Light
    assignment: Assignment | None
    overrides: tuple[Override, ...] = ()

    @property
    def calendar_id(self) -> UUID | None:
        return None if self.assignment is None else self.assignment.calendar_id


@dataclass
class Cluster:
    """Lights whose levels are equal at every instant: one calendar, one set of overrides, one sun."""

    calendar: Calendar | None  # None: lights no calendar governs, under overrides
    overrides: tuple[Override, ...]
    location: Location
    timezone: str
    plans: list[LightPlan] = field(default_factory=list)

    def level_at(self, at: dt.datetime) -> LevelDecision | None:
        return level_at(self.calendar, self.overrides, self.location, self.timezone, at)

    def transitions(self, start: dt.datetime, end: dt.datetime) -> list[Transition]:
        return transitions(self.calendar, self.overrides, self.location, self.timezone, start, end)

    def next_transition(self, after: dt.datetime) -> Transition | None:
        return next_transition(self.calendar, self.overrides, self.location, self.timezone, after)


async def load_schedule(conn: asyncpg.Connection, tenant_id: UUID, timezone: str,
                        start: dt.datetime, end: dt.datetime) -> Schedule:
    """Everything that can govern a light of the city between `start` and `end`."""
    repo = LightingRepository(conn)
    programs = {stored.id: stored.program for stored in await repo.programs(tenant_id)}
    calendars = {stored.id: stored.calendar(programs) for stored in await repo.calendars(tenant_id)}
    assignments = await repo.assignments(tenant_id)
    overrides = await repo.overrides(tenant_id, ending_after=start, starting_before=end, limit=MAX_OVERRIDES)
    group_ids = ({a.group_id for a in assignments if a.group_id is not None}
                 | {o.scope.group_id for o in overrides if o.scope.group_id is not None})
    devices = DeviceRepository(conn)
    members: dict[UUID, frozenset[UUID]] = {}
    for group_id in sorted(group_ids):
        try:
            members[group_id] = frozenset(await devices.ids_matching(tenant_id, DeviceFilter(group_id=group_id)))
        except NotFound:  # deleted since the assignments were read; its rows go with it
            members[group_id] = frozenset()
    return Schedule(timezone, calendars, assignments, overrides, members)


def _assignment_rank(assignment: Assignment, schedule: Schedule) -> tuple:
    """Greater ranks win; see the module docstring for the order."""
    if assignment.group_id is None:
        return (0, 0, assignment.created_at, assignment.id.int)
    return (1, -len(schedule.group_members.get(assignment.group_id, ())), assignment.created_at,
            assignment.id.int)


def _covers(override: StoredOverride, light: Light, schedule: Schedule) -> bool:
    scope = override.scope
    if scope.district is not None:
        return light.district == scope.district
    if scope.group_id is not None:
        return light.device_id in schedule.group_members.get(scope.group_id, ())
    return light.device_id in scope.device_ids


def plan_lights(schedule: Schedule, lights: Iterable[Light]) -> list[LightPlan]:
    """The calendar assignment and the overrides of each light."""
    ranked = sorted(schedule.assignments, key=lambda a: _assignment_rank(a, schedule), reverse=True)
    by_district = {a.district: a for a in ranked if a.district is not None}
    by_group = [a for a in ranked if a.group_id is not None]
    overrides = [(stored, model) for stored in schedule.overrides if (model := stored.model()) is not None]
    plans = []
    for light in lights:
        assignment = next((a for a in by_group if light.device_id in schedule.group_members.get(a.group_id, ())),
                          None) or by_district.get(light.district)
        if assignment is not None and assignment.calendar_id not in schedule.calendars:
            assignment = None
        covering = tuple(model for stored, model in overrides if _covers(stored, light, schedule))
        plans.append(LightPlan(light, assignment, covering))
    return plans


def clusters(schedule: Schedule, plans: Sequence[LightPlan]) -> list[Cluster]:
    """The lights with a calendar or an override grouped into clusters; the others are left out."""
    found: dict[tuple, Cluster] = {}
    for plan in plans:
        if plan.calendar_id is None and not plan.overrides:
            continue
        calendar = None if plan.calendar_id is None else schedule.calendars[plan.calendar_id]
        follows_sun = calendar is not None and any(program.follows_sun for program in calendar.programs)
        cell = rounded(plan.light.location) if follows_sun else None
        key = (plan.calendar_id, cell, tuple(sorted(o.override_id for o in plan.overrides)))
        cluster = found.get(key)
        if cluster is None:
            cluster = found[key] = Cluster(calendar, plan.overrides, plan.light.location, schedule.timezone)
        cluster.plans.append(plan)
    return list(found.values())
