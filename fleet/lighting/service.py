"""Use cases of dimming schedules: programs, calendars, assignments and overrides.

Each mutation owns its transaction, writes its audit entry and notifies the scheduler leader,
which re-plans within a second instead of at its next minute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg

from fleet.access.models import Permission, Principal
from fleet.audit.service import record
from fleet.db import Database
from fleet.errors import Conflict, FieldError, NotFound, ValidationFailed
from fleet.lighting import validation
from fleet.lighting.models import Calendar
from fleet.lighting.records import Assignment, StoredCalendar, StoredOverride, StoredProgram
from fleet.lighting.repository import LightingRepository
from fleet.registry.repository import DeviceRepository
from fleet.registry.service import require

def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _duplicate(kind: str, name: str) -> Conflict:
    return Conflict(f"a {kind} named {name!r} already exists in this city",
                    [FieldError("name", "is already taken in this city")])


class LightingService:
    def __init__(self, db: Database, *, clock=_now) -> None:
        self.db = db
        self.clock = clock

    # -- control programs ----------------------------------------------------------------------

    async def create_program(self, principal: Principal, raw: Mapping[str, Any]) -> StoredProgram:
        require(principal, Permission.MANAGE_SCHEDULES)
        name, description, points = self._program_fields(raw)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            try:
                async with conn.transaction():
                    program_id = await repo.insert_program(principal.tenant_id, name, description, points)
            except asyncpg.UniqueViolationError:
                raise _duplicate("program", name) from None
            program = await repo.program(principal.tenant_id, program_id)
            await record(conn, principal, "lighting.program.create", "lighting_program", program_id,
                         None, _program_json(program))
        return program

    async def replace_program(self, principal: Principal, program_id: UUID, raw: Mapping[str, Any]) -> StoredProgram:
        require(principal, Permission.MANAGE_SCHEDULES)
        name, description, points = self._program_fields(raw)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            before = await repo.program(principal.tenant_id, program_id, for_update=True)
            if before is None:
                raise NotFound(f"program {program_id} not found")
            try:
                async with conn.transaction():
                    await repo.update_program(principal.tenant_id, program_id, name, description, points)
            except asyncpg.UniqueViolationError:
                raise _duplicate("program", name) from None
            after = await repo.program(principal.tenant_id, program_id)
            await record(conn, principal, "lighting.program.update", "lighting_program", program_id,
                         _program_json(before), _program_json(after))
            await repo.notify_changed(principal.tenant_id)
        return after

    async def get_program(self, principal: Principal, program_id: UUID) -> StoredProgram:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            program = await LightingRepository(conn).program(principal.tenant_id, program_id)
        if program is None:
            raise NotFound(f"program {program_id} not found")
        return program

    async def list_programs(self, principal: Principal) -> list[StoredProgram]:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await LightingRepository(conn).programs(principal.tenant_id)

    async def delete_program(self, principal: Principal, program_id: UUID) -> None:
        require(principal, Permission.MANAGE_SCHEDULES)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            before = await repo.program(principal.tenant_id, program_id, for_update=True)
            if before is None:
                raise NotFound(f"program {program_id} not found")
            users = await repo.calendars_using(principal.tenant_id, program_id)
            if users:
                raise Conflict(f"program {program_id} is used by calendars: {', '.join(users[:20])}")
            await repo.delete_program(principal.tenant_id, program_id)
            await record(conn, principal, "lighting.program.delete", "lighting_program", program_id,
                         _program_json(before), None)

    @staticmethod
    def _program_fields(raw: Mapping[str, Any]) -> tuple[str, str, list]:
        name = validation.name(raw.get("name"))
        description = validation.description(raw.get("description"))
        program = validation.control_program("new", raw.get("switch_points"))
        return name, description, [validation.switch_point_json(p) for p in program.switch_points]

    # -- calendars -----------------------------------------------------------------------------

    async def create_calendar(self, principal: Principal, raw: Mapping[str, Any]) -> StoredCalendar:
        require(principal, Permission.MANAGE_SCHEDULES)
        name, description, default_id, rules = self._calendar_fields(raw)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            program_ids = await self._check_calendar(repo, principal.tenant_id, default_id, rules)
            try:
                async with conn.transaction():
                    calendar_id = await repo.insert_calendar(
                        principal.tenant_id, name, description, default_id, [validation.rule_json(r) for r in rules])
            except asyncpg.UniqueViolationError:
                raise _duplicate("calendar", name) from None
            await repo.link_programs(principal.tenant_id, calendar_id, program_ids)
            calendar = await repo.calendar(principal.tenant_id, calendar_id)
            await record(conn, principal, "lighting.calendar.create", "lighting_calendar", calendar_id,
                         None, _calendar_json(calendar))
        return calendar

    async def replace_calendar(self, principal: Principal, calendar_id: UUID,
                               raw: Mapping[str, Any]) -> StoredCalendar:
        require(principal, Permission.MANAGE_SCHEDULES)
        name, description, default_id, rules = self._calendar_fields(raw)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            before = await repo.calendar(principal.tenant_id, calendar_id, for_update=True)
            if before is None:
                raise NotFound(f"calendar {calendar_id} not found")
            program_ids = await self._check_calendar(repo, principal.tenant_id, default_id, rules)
            try:
                async with conn.transaction():
                    await repo.update_calendar(principal.tenant_id, calendar_id, name, description, default_id,
                                               [validation.rule_json(r) for r in rules])
            except asyncpg.UniqueViolationError:
                raise _duplicate("calendar", name) from None
            await repo.link_programs(principal.tenant_id, calendar_id, program_ids)
            after = await repo.calendar(principal.tenant_id, calendar_id)
            await record(conn, principal, "lighting.calendar.update", "lighting_calendar", calendar_id,
                         _calendar_json(before), _calendar_json(after))
            await repo.notify_changed(principal.tenant_id)
        return after

    async def get_calendar(self, principal: Principal, calendar_id: UUID) -> StoredCalendar:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            calendar = await LightingRepository(conn).calendar(principal.tenant_id, calendar_id)
        if calendar is None:
            raise NotFound(f"calendar {calendar_id} not found")
        return calendar

    async def list_calendars(self, principal: Principal) -> list[StoredCalendar]:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await LightingRepository(conn).calendars(principal.tenant_id)

    async def delete_calendar(self, principal: Principal, calendar_id: UUID) -> None:
        require(principal, Permission.MANAGE_SCHEDULES)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            before = await repo.calendar(principal.tenant_id, calendar_id, for_update=True)
            if before is None:
                raise NotFound(f"calendar {calendar_id} not found")
            assigned = await repo.assignments(principal.tenant_id, calendar_id)
            if assigned:
                raise Conflict(f"calendar {calendar_id} is assigned to {len(assigned)} group(s) or "
                               "district(s); remove those assignments first")
            await repo.delete_calendar(principal.tenant_id, calendar_id)
            await record(conn, principal, "lighting.calendar.delete", "lighting_calendar", calendar_id,
                         _calendar_json(before), None)

    @staticmethod
    def _calendar_fields(raw: Mapping[str, Any]) -> tuple[str, str, UUID, tuple]:
        errors: list[FieldError] = []
        values: list[Any] = []
        for parse in (lambda: validation.name(raw.get("name")),
                      lambda: validation.description(raw.get("description")),
                      lambda: validation.default_program_id(raw.get("default_program_id")),
                      lambda: validation.calendar_rules(raw.get("rules"))):
            try:
                values.append(parse())
            except ValidationFailed as exc:
                errors += exc.errors
                values.append(None)
        if errors:
            raise ValidationFailed("invalid calendar", errors)
        return tuple(values)  # type: ignore[return-value]

    @staticmethod
    async def _check_calendar(repo: LightingRepository, tenant_id: UUID, default_id: UUID,
                              rules: tuple) -> list[UUID]:
        """The programs the calendar uses, all of this city; the calendar validated as a whole."""
        wanted = {default_id, *(UUID(rule.program_id) for rule in rules)}
        programs = {p.id: p.program for p in await repo.programs(tenant_id, sorted(wanted))}
        errors = []
        if default_id not in programs:
            errors.append(FieldError("default_program_id", f"no program {default_id} in this city"))
        errors += [FieldError(f"rules[{index}].program_id", f"no program {rule.program_id} in this city")
                   for index, rule in enumerate(rules) if UUID(rule.program_id) not in programs]
        if errors:
            raise ValidationFailed("invalid calendar", errors)
        try:
            Calendar("new", list(programs.values()), str(default_id), rules)
        except ValidationFailed as exc:
            raise ValidationFailed("invalid calendar", exc.errors) from None
        return sorted(wanted)

    # -- assignments ---------------------------------------------------------------------------

    async def assign(self, principal: Principal, raw: Mapping[str, Any]) -> Assignment:
        require(principal, Permission.MANAGE_SCHEDULES)
        calendar_id = _calendar_id(raw)
        group_id, district = validation.scope(raw, "scope")
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            await self._existing_calendar(repo, principal.tenant_id, calendar_id)
            await DeviceRepository(conn).require_known_district(principal.tenant_id, district, "scope.district")
            if group_id is not None and not await repo.group_exists(principal.tenant_id, group_id):
                raise ValidationFailed("invalid assignment", [FieldError(
                    "group_id", f"no group {group_id} in this city")])
            try:
                async with conn.transaction():
                    assignment = await repo.insert_assignment(principal.tenant_id, calendar_id, group_id, district)
            except asyncpg.UniqueViolationError:
                what = f"group {group_id}" if group_id else f"district {district!r}"
                raise Conflict(f"{what} already has a calendar; change that assignment instead") from None
            await record(conn, principal, "lighting.assignment.create", "lighting_assignment", assignment.id,
                         None, assignment)
            await repo.notify_changed(principal.tenant_id)
        return assignment

    async def reassign(self, principal: Principal, assignment_id: UUID, raw: Mapping[str, Any]) -> Assignment:
        require(principal, Permission.MANAGE_SCHEDULES)
        calendar_id = _calendar_id(raw)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            before = await repo.assignment(principal.tenant_id, assignment_id, for_update=True)
            if before is None:
                raise NotFound(f"assignment {assignment_id} not found")
            await self._existing_calendar(repo, principal.tenant_id, calendar_id)
            after = await repo.reassign(principal.tenant_id, assignment_id, calendar_id)
            await record(conn, principal, "lighting.assignment.update", "lighting_assignment", assignment_id,
                         before, after)
            await repo.notify_changed(principal.tenant_id)
        return after

    async def list_assignments(self, principal: Principal) -> list[Assignment]:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await LightingRepository(conn).assignments(principal.tenant_id)

    async def get_assignment(self, principal: Principal, assignment_id: UUID) -> Assignment:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            assignment = await LightingRepository(conn).assignment(principal.tenant_id, assignment_id)
        if assignment is None:
            raise NotFound(f"assignment {assignment_id} not found")
        return assignment

    async def unassign(self, principal: Principal, assignment_id: UUID) -> None:
        """The lights keep the level they have; Fleet stops scheduling them."""
        require(principal, Permission.MANAGE_SCHEDULES)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            before = await repo.assignment(principal.tenant_id, assignment_id, for_update=True)
            if before is None:
                raise NotFound(f"assignment {assignment_id} not found")
            await repo.delete_assignment(principal.tenant_id, assignment_id)
            await record(conn, principal, "lighting.assignment.delete", "lighting_assignment", assignment_id,
                         before, None)
            await repo.notify_changed(principal.tenant_id)

    @staticmethod
    async def _existing_calendar(repo: LightingRepository, tenant_id: UUID, calendar_id: UUID) -> None:
        if await repo.calendar(tenant_id, calendar_id) is None:
            raise ValidationFailed("invalid assignment", [FieldError(
                "calendar_id", f"no calendar {calendar_id} in this city")])

    # -- overrides -----------------------------------------------------------------------------

    async def create_override(self, principal: Principal, raw: Mapping[str, Any]) -> StoredOverride:
        """"District X at 100 % for 2 hours from now": the newest highest-priority override wins."""
        require(principal, Permission.MANAGE_SCHEDULES)
        now = self.clock()
        errors: list[FieldError] = []
        parsed: dict[str, Any] = {}
        duration = raw.get("duration_s")
        for key, parse in (("scope", lambda: validation.override_scope(raw.get("scope"))),
                           ("dimming_level", lambda: validation.dimming_level(raw.get("dimming_level"))),
                           ("priority", lambda: validation.priority(raw.get("priority", 0))),
                           ("reason", lambda: validation.description(raw.get("reason"))),
                           ("window", lambda: validation.override_window(
                               now, raw.get("starts_at"), raw.get("ends_at"),
                               None if duration is None else dt.timedelta(seconds=duration)))):
            try:
                parsed[key] = parse()
            except ValidationFailed as exc:
                errors += exc.errors
        if errors:
            raise ValidationFailed("invalid override", errors)
        scope = parsed["scope"]
        starts_at, ends_at = parsed["window"]
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            await DeviceRepository(conn).require_known_district(principal.tenant_id, scope.district, "scope.district")
            if scope.group_id is not None and not await repo.group_exists(principal.tenant_id, scope.group_id):
                raise ValidationFailed("invalid override", [FieldError(
                    "scope.group_id", f"no group {scope.group_id} in this city")])
            if scope.device_ids:
                found = {light.device_id for light in await repo.lights(principal.tenant_id, scope.device_ids)}
                missing = [str(d) for d in scope.device_ids if d not in found]
                if missing:
                    raise ValidationFailed("invalid override", [FieldError(
                        "scope.device_ids", f"not streetlights in service in this city: {', '.join(missing[:20])}")])
            override = await repo.insert_override(principal.tenant_id, scope, parsed["dimming_level"],
                                                  parsed["priority"], starts_at, ends_at, parsed["reason"],
                                                  principal.api_key_id)
            await record(conn, principal, "lighting.override.create", "lighting_override", override.id,
                         None, override)
            await repo.notify_changed(principal.tenant_id)
        return override

    async def cancel_override(self, principal: Principal, override_id: UUID) -> StoredOverride:
        """End an override now (or before it starts); the calendar resumes at once."""
        require(principal, Permission.MANAGE_SCHEDULES)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = LightingRepository(conn)
            before = await repo.override(principal.tenant_id, override_id, for_update=True)
            if before is None:
                raise NotFound(f"override {override_id} not found")
            now = self.clock()
            if before.cancelled_at is not None or before.ends_at <= now:
                return before
            after = await repo.cancel_override(principal.tenant_id, override_id, now)
            await record(conn, principal, "lighting.override.cancel", "lighting_override", override_id,
                         before, after)
            await repo.notify_changed(principal.tenant_id)
        return after

    async def get_override(self, principal: Principal, override_id: UUID) -> StoredOverride:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            override = await LightingRepository(conn).override(principal.tenant_id, override_id)
        if override is None:
            raise NotFound(f"override {override_id} not found")
        return override

    async def list_overrides(self, principal: Principal, *, include_ended: bool = False,
                             limit: int = 1000) -> list[StoredOverride]:
        """Overrides acting now or later, newest first; with `include_ended`, past ones too."""
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await LightingRepository(conn).overrides(
                principal.tenant_id, ending_after=None if include_ended else self.clock(), limit=limit)


def _calendar_id(raw: Mapping[str, Any]) -> UUID:
    try:
        return UUID(str(raw.get("calendar_id")))
    except ValueError:
        raise ValidationFailed("invalid assignment", [FieldError("calendar_id", "must be a UUID")]) from None


def _program_json(program: StoredProgram) -> dict[str, Any]:
    return {"id": str(program.id), "name": program.name, "description": program.description,
            "switch_points": [validation.switch_point_json(p) for p in program.program.switch_points]}


def _calendar_json(calendar: StoredCalendar) -> dict[str, Any]:
    return {"id": str(calendar.id), "name": calendar.name, "description": calendar.description,
            "default_program_id": str(calendar.default_program_id),
            "rules": [validation.rule_json(r) for r in calendar.rules]}
