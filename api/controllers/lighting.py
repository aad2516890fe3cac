"""/api/v1/lighting: dimming programs, calendars, assignments, overrides, preview and energy."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.params import Parameter
from msgspec import Meta, Struct

from api.problems import problems
from fleet.access.models import Principal
from fleet.lighting import validation
from fleet.lighting.energy import EnergyReport, EnergyService, LightEnergy
from fleet.lighting.records import Assignment as AssignmentModel
from fleet.lighting.records import StoredCalendar, StoredOverride, StoredProgram
from fleet.lighting.schedule import Transition as TransitionModel
from fleet.lighting.preview import LightsPreview, Preview, PreviewService
from fleet.lighting.service import LightingService

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Description = Annotated[str, Meta(max_length=2000)]
Text = Annotated[str, Meta(min_length=1, max_length=300)]


class SwitchPoint(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """At a local time (HH:MM) or at sunset/sunrise + offset_minutes, set dimming_level % (0 = off).

    Listed in the order they fire from noon to noon: evening points before morning points."""

    anchor: Literal["local_time", "sunset", "sunrise"]
    dimming_level: int
    id: Annotated[str, Meta(max_length=64)] | None = None
    local_time: Annotated[str, Meta(description="HH:MM, local_time points only")] | None = None
    offset_minutes: Annotated[int, Meta(description="sunset/sunrise points only")] | None = None


class Program(Struct):
    id: UUID
    name: str
    description: str
    switch_points: list[SwitchPoint]
    created_at: dt.datetime
    updated_at: dt.datetime


class ProgramWrite(Struct, forbid_unknown_fields=True):
    name: Name
    switch_points: list[SwitchPoint]
    description: Description = ""


class DateSpan(Struct, forbid_unknown_fields=True):
    """Both YYYY-MM-DD for one span of dates, or both MM-DD for every year (wrapping past new year)."""

    first: str
    last: str


class CalendarRule(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Picks program_id for the nights matching every criterion given."""

    program_id: UUID
    id: Annotated[str, Meta(max_length=64)] | None = None
    date_range: DateSpan | None = None
    weekdays: Annotated[list[int], Meta(description="ISO: 1 = Monday .. 7 = Sunday")] | None = None
    dates: list[dt.date] | None = None


class Calendar(Struct):
    id: UUID
    name: str
    description: str
    default_program_id: UUID
    rules: list[CalendarRule]
    created_at: dt.datetime
    updated_at: dt.datetime


class CalendarWrite(Struct, forbid_unknown_fields=True):
    """Rules are tried in order; nights no rule matches run the default program."""

    name: Name
    default_program_id: UUID
    rules: list[CalendarRule] = []
    description: Description = ""


class Assignment(Struct):
    id: UUID
    calendar_id: UUID
    group_id: UUID | None
    district: str | None
    created_at: dt.datetime


class AssignmentCreate(Struct, forbid_unknown_fields=True):
    """A calendar for a group or a district (exactly one). A group's beats a district's."""

    __exactly_one_of__: ClassVar = ("group_id", "district")

    calendar_id: UUID
    group_id: UUID | None = None
    district: Text | None = None


class AssignmentUpdate(Struct, forbid_unknown_fields=True):
    calendar_id: UUID


class OverrideScope(Struct, forbid_unknown_fields=True, omit_defaults=True):
    __exactly_one_of__: ClassVar = ("district", "group_id", "device_ids")

    district: Text | None = None
    group_id: UUID | None = None
    device_ids: Annotated[list[UUID], Meta(max_length=10_000)] | None = None


class Override(Struct):
    id: UUID
    scope: OverrideScope
    dimming_level: int
    priority: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    reason: str
    created_at: dt.datetime
    cancelled_at: dt.datetime | None
    active: bool


class OverrideCreate(Struct, forbid_unknown_fields=True):
    """E.g. {"scope": {"district": "Jung-gu"}, "dimming_level": 100, "duration_s": 7200}.

    Starts now unless starts_at is given; give ends_at or duration_s."""

    scope: OverrideScope
    dimming_level: int
    priority: int = 0
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    duration_s: Annotated[int, Meta(ge=1, le=31 * 86400)] | None = None
    reason: Description = ""


class Transition(Struct, omit_defaults=True):
    """A change of level; source "resume" (level null): an override on a light without a calendar
    ended, and the light goes back to the level it had before."""

    at: dt.datetime
    dimming_level: int | None
    source: str
    program_id: str | None = None
    rule_id: str | None = None
    switch_point_id: str | None = None
    override_id: str | None = None


class LightsPreviewOut(Struct):
    """Lights sharing one schedule: their level at `at` and every change in the 48 hours after."""

    device_ids: list[UUID]
    calendar_id: UUID | None
    assignment_id: UUID | None
    assigned_via: Literal["group", "district"] | None
    dimming_level: int | None
    source: str | None
    since: dt.datetime | None
    program_id: str | None
    rule_id: str | None
    switch_point_id: str | None
    override_id: str | None
    sunset: dt.datetime | None
    sunrise: dt.datetime | None
    transitions: list[Transition]


class LightingPreview(Struct):
    at: dt.datetime
    until: dt.datetime
    timezone: str
    device_id: UUID | None
    group_id: UUID | None
    # The level of every light in scope when they agree; null when they differ or none is scheduled.
    dimming_level: int | None
    lights: list[LightsPreviewOut]


class LightEnergyOut(Struct):
    device_id: UUID
    nominal_wattage: float | None
    nights: int
    lit_hours: float
    energy_wh: float | None
    full_power_wh: float | None
    savings_wh: float | None
    savings_percent: float | None
    method: Literal["cumulative_energy", "active_power", "none"]


class Window(Struct):
    from_: dt.datetime = msgspec.field(name="from")
    to: dt.datetime


class Energy(Struct):
    since: dt.datetime
    until: dt.datetime
    window: Annotated[Window, Meta(description="the period the figures cover, in the city's local time")]
    device_id: UUID | None
    group_id: UUID | None
    district: str | None
    lights: int
    lights_with_data: int
    lit_hours: float
    energy_wh: float
    full_power_wh: float
    savings_wh: float
    savings_percent: float | None
    devices: list[LightEnergyOut] | None


def _builtins(data: Struct) -> dict[str, Any]:
    return msgspec.to_builtins(data)


def program_out(program: StoredProgram) -> Program:
    points = [msgspec.convert(validation.switch_point_json(p), SwitchPoint) for p in program.program.switch_points]
    return Program(program.id, program.name, program.description, points, program.created_at, program.updated_at)


def _local(at: dt.datetime | None, zone: ZoneInfo) -> dt.datetime | None:
    """An instant as the city's clocks show it (stored and computed in UTC): `+09:00`, not `Z`."""
    return None if at is None else at.astimezone(zone)


def _city_zone(principal: Principal) -> ZoneInfo:
    return ZoneInfo(principal.tenant_timezone)


def calendar_out(calendar: StoredCalendar, zone: ZoneInfo) -> Calendar:
    rules = [msgspec.convert(validation.rule_json(r), CalendarRule) for r in calendar.rules]
    return Calendar(calendar.id, calendar.name, calendar.description, calendar.default_program_id, rules,
                    _local(calendar.created_at, zone), _local(calendar.updated_at, zone))


def assignment_out(a: AssignmentModel) -> Assignment:
    return Assignment(a.id, a.calendar_id, a.group_id, a.district, a.created_at)


def override_out(o: StoredOverride, now: dt.datetime | None = None) -> Override:
    scope = OverrideScope(o.scope.district, o.scope.group_id, list(o.scope.device_ids) or None)
    return Override(o.id, scope, o.dimming_level, o.priority, o.starts_at, o.ends_at, o.reason, o.created_at,
                    o.cancelled_at, o.is_active(now or dt.datetime.now(dt.UTC)))


def _transition(t: TransitionModel, zone: ZoneInfo) -> Transition:
    return Transition(_local(t.at, zone), t.dimming_level, t.source.value, t.program_id, t.rule_id, t.switch_point_id,
                      t.override_id)


def _lights_out(p: LightsPreview, zone: ZoneInfo) -> LightsPreviewOut:
    level, assignment = p.level, p.assignment
    via = None if assignment is None else ("group" if assignment.group_id is not None else "district")
    return LightsPreviewOut(
        p.device_ids, p.calendar_id, None if assignment is None else assignment.id, via,
        None if level is None else level.dimming_level, None if level is None else level.source.value,
        None if level is None else _local(level.since, zone), None if level is None else level.program_id,
        None if level is None else level.rule_id, None if level is None else level.switch_point_id,
        None if level is None else level.override_id,
        None if p.sun is None else _local(p.sun.sunset, zone),
        None if p.sun is None else _local(p.sun.sunrise, zone),
        [_transition(t, zone) for t in p.transitions])


def preview_out(preview: Preview) -> LightingPreview:
    zone = ZoneInfo(preview.timezone)
    lights = [_lights_out(p, zone) for p in preview.lights]
    levels = {p.dimming_level for p in lights}
    return LightingPreview(_local(preview.at, zone), _local(preview.until, zone), preview.timezone,
                           preview.device_id, preview.group_id, levels.pop() if len(levels) == 1 else None, lights)


def _light_energy_out(e: LightEnergy) -> LightEnergyOut:
    return LightEnergyOut(e.device_id, e.nominal_wattage, e.nights, e.lit_hours, e.energy_wh, e.full_power_wh,
                          e.savings_wh, e.savings_percent, e.method)


def energy_out(report: EnergyReport, zone: ZoneInfo) -> Energy:
    since, until = _local(report.since, zone), _local(report.until, zone)
    return Energy(since, until, Window(since, until), report.device_id, report.group_id, report.district, report.lights,
                  report.lights_with_data, report.lit_hours, report.energy_wh, report.full_power_wh,
                  report.savings_wh, report.savings_percent,
                  None if report.devices is None else [_light_energy_out(e) for e in report.devices])


class LightingController(Controller):
    path = "/api/v1/lighting"
    tags = ["lighting"]

    @post("/programs", summary="Create a control program (switch points through one night)",
          responses=problems(403, 409, 422))
    async def create_program(self, data: ProgramWrite, principal: Principal,
                             lighting_service: LightingService) -> Program:
        return program_out(await lighting_service.create_program(principal, _builtins(data)))

    @get("/programs", summary="Every control program of the city, by name")
    async def list_programs(self, principal: Principal, lighting_service: LightingService) -> list[Program]:
        return [program_out(p) for p in await lighting_service.list_programs(principal)]

    @get("/programs/{program_id:uuid}", summary="One control program")
    async def get_program(self, program_id: UUID, principal: Principal,
                          lighting_service: LightingService) -> Program:
        return program_out(await lighting_service.get_program(principal, program_id))

    @put("/programs/{program_id:uuid}", summary="Replace a control program; calendars using it follow",
         responses=problems(403, 409, 422))
    async def replace_program(self, program_id: UUID, data: ProgramWrite, principal: Principal,
                              lighting_service: LightingService) -> Program:
        return program_out(await lighting_service.replace_program(principal, program_id, _builtins(data)))

    @delete("/programs/{program_id:uuid}", summary="Delete a program no calendar uses",
            responses=problems(403, 409))
    async def delete_program(self, program_id: UUID, principal: Principal,
                             lighting_service: LightingService) -> None:
        await lighting_service.delete_program(principal, program_id)

    @post("/calendars", summary="Create a calendar: ordered rules picking a program per night, and a default",
          responses=problems(403, 404, 409, 422))
    async def create_calendar(self, data: CalendarWrite, principal: Principal,
                              lighting_service: LightingService) -> Calendar:
        return calendar_out(await lighting_service.create_calendar(principal, _builtins(data)), _city_zone(principal))

    @get("/calendars", summary="Every calendar of the city, by name")
    async def list_calendars(self, principal: Principal, lighting_service: LightingService) -> list[Calendar]:
        return [calendar_out(c, _city_zone(principal)) for c in await lighting_service.list_calendars(principal)]

    @get("/calendars/{calendar_id:uuid}", summary="One calendar")
    async def get_calendar(self, calendar_id: UUID, principal: Principal,
                           lighting_service: LightingService) -> Calendar:
        return calendar_out(await lighting_service.get_calendar(principal, calendar_id), _city_zone(principal))

    @put("/calendars/{calendar_id:uuid}", summary="Replace a calendar; its lights are re-planned at once",
         responses=problems(403, 404, 409, 422))
    async def replace_calendar(self, calendar_id: UUID, data: CalendarWrite, principal: Principal,
                               lighting_service: LightingService) -> Calendar:
        return calendar_out(await lighting_service.replace_calendar(principal, calendar_id, _builtins(data)),
                            _city_zone(principal))

    @delete("/calendars/{calendar_id:uuid}", summary="Delete a calendar that is not assigned",
            responses=problems(403, 409))
    async def delete_calendar(self, calendar_id: UUID, principal: Principal,
                              lighting_service: LightingService) -> None:
        await lighting_service.delete_calendar(principal, calendar_id)

    @post("/assignments", summary="Give a group or a district a calendar", responses=problems(403, 404, 409, 422))
    async def create_assignment(self, data: AssignmentCreate, principal: Principal,
                                lighting_service: LightingService) -> Assignment:
        return assignment_out(await lighting_service.assign(principal, _builtins(data)))

    @get("/assignments", summary="Every assignment of the city, oldest first")
    async def list_assignments(self, principal: Principal, lighting_service: LightingService) -> list[Assignment]:
        return [assignment_out(a) for a in await lighting_service.list_assignments(principal)]

    @get("/assignments/{assignment_id:uuid}", summary="One assignment")
    async def get_assignment(self, assignment_id: UUID, principal: Principal,
                             lighting_service: LightingService) -> Assignment:
        return assignment_out(await lighting_service.get_assignment(principal, assignment_id))

    @patch("/assignments/{assignment_id:uuid}", summary="Switch the group or district to another calendar",
           responses=problems(403, 404, 422))
    async def update_assignment(self, assignment_id: UUID, data: AssignmentUpdate, principal: Principal,
                                lighting_service: LightingService) -> Assignment:
        return assignment_out(await lighting_service.reassign(principal, assignment_id, _builtins(data)))

    @delete("/assignments/{assignment_id:uuid}", summary="Stop scheduling the group or district",
            responses=problems(403))
    async def delete_assignment(self, assignment_id: UUID, principal: Principal,
                                lighting_service: LightingService) -> None:
        await lighting_service.unassign(principal, assignment_id)

    @post("/overrides", summary="Hold a district, group or devices at a level for a while",
          responses=problems(403, 404, 422))
    async def create_override(self, data: OverrideCreate, principal: Principal,
                              lighting_service: LightingService) -> Override:
        raw = {"scope": _builtins(data.scope), "dimming_level": data.dimming_level, "priority": data.priority,
               "starts_at": data.starts_at, "ends_at": data.ends_at, "duration_s": data.duration_s,
               "reason": data.reason}
        return override_out(await lighting_service.create_override(principal, raw))

    @get("/overrides", summary="Overrides acting now or later, newest first (all with include_ended)")
    async def list_overrides(self, principal: Principal, lighting_service: LightingService,
                             include_ended: bool = False,
                             limit: Annotated[int, Parameter(ge=1, le=1000)] = 100) -> list[Override]:
        found = await lighting_service.list_overrides(principal, include_ended=include_ended, limit=limit)
        return [override_out(o) for o in found]

    @get("/overrides/{override_id:uuid}", summary="One override")
    async def get_override(self, override_id: UUID, principal: Principal,
                           lighting_service: LightingService) -> Override:
        return override_out(await lighting_service.get_override(principal, override_id))

    @post("/overrides/{override_id:uuid}/cancel", status_code=200, summary="End an override now",
          responses=problems(403, 409))
    async def cancel_override(self, override_id: UUID, principal: Principal,
                              lighting_service: LightingService) -> Override:
        return override_out(await lighting_service.cancel_override(principal, override_id))

    @get("/preview", summary="The level of a light or group at a time, and its transitions over 48 hours",
         responses=problems(404, 422))
    async def preview(self, principal: Principal, preview_service: PreviewService,
                      device_id: UUID | None = None, group_id: UUID | None = None,
                      at: Annotated[str | None, Parameter(
                          description="ISO 8601; without an offset, the city's local time; default now")] = None,
                      ) -> LightingPreview:
        return preview_out(await preview_service.preview(principal, device_id=device_id, group_id=group_id, at=at))

    @get("/energy", summary="Energy used over the nights and the savings against full power",
         responses=problems(404, 422))
    async def energy(self, principal: Principal, energy_service: EnergyService,
                     device_id: UUID | None = None, group_id: UUID | None = None,
                     district: Annotated[str | None, Parameter(max_length=300)] = None,
                     since: Annotated[str | None, Parameter(
                         description="ISO 8601, local time without an offset; default a day before until")] = None,
                     until: Annotated[str | None, Parameter(description="ISO 8601; default now")] = None,
                     breakdown: Annotated[bool, Parameter(description="also list every light")] = False,
                     ) -> Energy:
        report = await energy_service.report(principal, device_id=device_id, group_id=group_id,
                                             district=district, since=since, until=until, breakdown=breakdown)
        return energy_out(report, _city_zone(principal))
