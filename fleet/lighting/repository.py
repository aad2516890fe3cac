"""SQL for lighting: programs, calendars, assignments, overrides, the lights they govern and targets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from uuid import UUID

import asyncpg

from fleet.lighting import validation
from fleet.lighting.records import (Assignment, Light, OverrideScope, StoredCalendar,
                                    StoredOverride, StoredProgram, Target)

NOTIFY_CHANNEL = "fleet_lighting"
DIMMER_3311 = "/3311/0/5851"
COMMAND_3416 = "/3416/0/1"
# Where a light reports the level it actually burns at: 3416's measured Dimming level; 3311's
# Dimmer is both the command and the state.
MEASURED_3416 = "/3416/0/3"
# A light that reports another level than the one it acknowledged is put right at most this often
# (a lamp failure reads 0 whatever we write; it must not cost a command a minute).
DRIFT_RETRY = dt.timedelta(minutes=15)
# Reports this soon after the write may still show the level before it (fading, a report in flight).
DRIFT_SETTLE = dt.timedelta(minutes=1)

_OVERRIDE_COLUMNS = ("id, district, group_id, device_ids, dimming_level, priority, starts_at, ends_at, "
                     "reason, created_at, cancelled_at, created_by")


def program_from_row(row: asyncpg.Record) -> StoredProgram:
    return StoredProgram(row["id"], row["name"], row["description"],
                         validation.control_program(str(row["id"]), row["switch_points"]),
                         row["created_at"], row["updated_at"])


def calendar_from_row(row: asyncpg.Record) -> StoredCalendar:
    return StoredCalendar(row["id"], row["name"], row["description"], row["default_program_id"],
                          validation.calendar_rules(row["rules"]), row["created_at"], row["updated_at"])


def assignment_from_row(row: asyncpg.Record) -> Assignment:
    return Assignment(row["id"], row["calendar_id"], row["group_id"], row["district"], row["created_at"])


def override_from_row(row: asyncpg.Record) -> StoredOverride:
    scope = OverrideScope(row["district"], row["group_id"], tuple(row["device_ids"] or ()))
    return StoredOverride(row["id"], scope, row["dimming_level"], row["priority"], row["starts_at"],
                          row["ends_at"], row["reason"], row["created_at"], row["cancelled_at"],
                          row["created_by"])


class LightingRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def notify_changed(self, tenant_id: UUID) -> None:
        """Wake the scheduler leader (delivered at commit), so a change acts within a second."""
        await self.conn.execute("select pg_notify($1, $2)", NOTIFY_CHANNEL, str(tenant_id))

    # -- programs ------------------------------------------------------------------------------

    async def insert_program(self, tenant_id: UUID, name: str, description: str, switch_points: list) -> UUID:
        return await self.conn.fetchval(
            """insert into lighting_programs (tenant_id, name, description, switch_points)
               values ($1, $2, $3, $4) returning id""", tenant_id, name, description, switch_points)

    async def update_program(self, tenant_id: UUID, program_id: UUID, name: str, description: str,
                             switch_points: list) -> None:
        await self.conn.execute(
            """update lighting_programs set name = $3, description = $4, switch_points = $5,
                                            updated_at = now()
               where tenant_id = $1 and id = $2""", tenant_id, program_id, name, description, switch_points)

    async def program(self, tenant_id: UUID, program_id: UUID, *, for_update: bool = False) -> StoredProgram | None:
        lock = " for update" if for_update else ""
        row = await self.conn.fetchrow(
            f"select * from lighting_programs where tenant_id = $1 and id = $2{lock}", tenant_id, program_id)
        return program_from_row(row) if row else None

    async def programs(self, tenant_id: UUID, ids: Sequence[UUID] | None = None) -> list[StoredProgram]:
        rows = await self.conn.fetch(
            """select * from lighting_programs
               where tenant_id = $1 and ($2::uuid[] is null or id = any($2::uuid[]))
               order by name, id""", tenant_id, None if ids is None else list(ids))
        return [program_from_row(r) for r in rows]

    async def delete_program(self, tenant_id: UUID, program_id: UUID) -> None:
        await self.conn.execute("delete from lighting_programs where tenant_id = $1 and id = $2",
                                tenant_id, program_id)

    async def calendars_using(self, tenant_id: UUID, program_id: UUID) -> list[str]:
        rows = await self.conn.fetch(
            """select c.name from lighting_calendar_programs l join lighting_calendars c on c.id = l.calendar_id
               where l.tenant_id = $1 and l.program_id = $2 order by c.name""", tenant_id, program_id)
        return [r["name"] for r in rows]

    # -- calendars -----------------------------------------------------------------------------

    async def insert_calendar(self, tenant_id: UUID, name: str, description: str,
                              default_program_id: UUID, rules: list) -> UUID:
        return await self.conn.fetchval(
            """insert into lighting_calendars (tenant_id, name, description, default_program_id, rules)
               values ($1, $2, $3, $4, $5) returning id""",
            tenant_id, name, description, default_program_id, rules)

    async def update_calendar(self, tenant_id: UUID, calendar_id: UUID, name: str, description: str,
                              default_program_id: UUID, rules: list) -> None:
        await self.conn.execute(
            """update lighting_calendars set name = $3, description = $4, default_program_id = $5,
                                             rules = $6, updated_at = now()
               where tenant_id = $1 and id = $2""",
            tenant_id, calendar_id, name, description, default_program_id, rules)

    async def link_programs(self, tenant_id: UUID, calendar_id: UUID, program_ids: Sequence[UUID]) -> None:
        await self.conn.execute(
            "delete from lighting_calendar_programs where tenant_id = $1 and calendar_id = $2",
            tenant_id, calendar_id)
        await self.conn.execute(
            """insert into lighting_calendar_programs (tenant_id, calendar_id, program_id)
               select $1, $2, p from unnest($3::uuid[]) as p""", tenant_id, calendar_id, list(program_ids))

    async def calendar(self, tenant_id: UUID, calendar_id: UUID, *, for_update: bool = False) -> StoredCalendar | None:
        lock = " for update" if for_update else ""
        row = await self.conn.fetchrow(
            f"select * from lighting_calendars where tenant_id = $1 and id = $2{lock}", tenant_id, calendar_id)
        return calendar_from_row(row) if row else None

    async def calendars(self, tenant_id: UUID) -> list[StoredCalendar]:
        rows = await self.conn.fetch(
            "select * from lighting_calendars where tenant_id = $1 order by name, id", tenant_id)
        return [calendar_from_row(r) for r in rows]

    async def delete_calendar(self, tenant_id: UUID, calendar_id: UUID) -> None:
        await self.conn.execute("delete from lighting_calendars where tenant_id = $1 and id = $2",
                                tenant_id, calendar_id)

    # -- assignments ---------------------------------------------------------------------------

    async def insert_assignment(self, tenant_id: UUID, calendar_id: UUID, group_id: UUID | None,
                                district: str | None) -> Assignment:
        row = await self.conn.fetchrow(
            """insert into lighting_assignments (tenant_id, calendar_id, group_id, district)
               values ($1, $2, $3, $4) returning *""", tenant_id, calendar_id, group_id, district)
        return assignment_from_row(row)

    async def assignment(self, tenant_id: UUID, assignment_id: UUID, *, for_update: bool = False) -> Assignment | None:
        lock = " for update" if for_update else ""
        row = await self.conn.fetchrow(
            f"select * from lighting_assignments where tenant_id = $1 and id = $2{lock}",
            tenant_id, assignment_id)
        return assignment_from_row(row) if row else None

    async def assignments(self, tenant_id: UUID, calendar_id: UUID | None = None) -> list[Assignment]:
        rows = await self.conn.fetch(
            """select * from lighting_assignments
               where tenant_id = $1 and ($2::uuid is null or calendar_id = $2)
               order by created_at, id""", tenant_id, calendar_id)
        return [assignment_from_row(r) for r in rows]

    async def reassign(self, tenant_id: UUID, assignment_id: UUID, calendar_id: UUID) -> Assignment:
        row = await self.conn.fetchrow(
            """update lighting_assignments set calendar_id = $3 where tenant_id = $1 and id = $2
               returning *""", tenant_id, assignment_id, calendar_id)
        return assignment_from_row(row)

    async def delete_assignment(self, tenant_id: UUID, assignment_id: UUID) -> None:
        await self.conn.execute("delete from lighting_assignments where tenant_id = $1 and id = $2",
                                tenant_id, assignment_id)

    async def group_exists(self, tenant_id: UUID, group_id: UUID) -> bool:
        return bool(await self.conn.fetchval(
            "select 1 from device_groups where tenant_id = $1 and id = $2", tenant_id, group_id))

    # -- overrides -----------------------------------------------------------------------------

    async def insert_override(self, tenant_id: UUID, scope: OverrideScope, dimming_level: int,
                              priority: int, starts_at: dt.datetime, ends_at: dt.datetime, reason: str,
                              created_by: UUID | None) -> StoredOverride:
        row = await self.conn.fetchrow(
            f"""insert into lighting_overrides (tenant_id, district, group_id, device_ids, dimming_level,
                                                priority, starts_at, ends_at, reason, created_by)
                values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning {_OVERRIDE_COLUMNS}""",
            tenant_id, scope.district, scope.group_id, list(scope.device_ids) or None, dimming_level,
            priority, starts_at, ends_at, reason, created_by)
        return override_from_row(row)

    async def override(self, tenant_id: UUID, override_id: UUID, *, for_update: bool = False) -> StoredOverride | None:
        lock = " for update" if for_update else ""
        row = await self.conn.fetchrow(
            f"select {_OVERRIDE_COLUMNS} from lighting_overrides where tenant_id = $1 and id = $2{lock}",
            tenant_id, override_id)
        return override_from_row(row) if row else None

    async def overrides(self, tenant_id: UUID, *, ending_after: dt.datetime | None,
                        starting_before: dt.datetime | None = None, limit: int = 1000) -> list[StoredOverride]:
        """Overrides still acting after `ending_after` (all when None), newest first."""
        rows = await self.conn.fetch(
            f"""select {_OVERRIDE_COLUMNS} from lighting_overrides
                where tenant_id = $1
                  and ($2::timestamptz is null or least(ends_at, coalesce(cancelled_at, ends_at)) > $2)
                  and ($3::timestamptz is null or starts_at < $3)
                order by created_at desc, id desc limit $4""",
            tenant_id, ending_after, starting_before, limit)
        return [override_from_row(r) for r in rows]

    async def cancel_override(self, tenant_id: UUID, override_id: UUID, at: dt.datetime) -> StoredOverride:
        row = await self.conn.fetchrow(
            f"""update lighting_overrides set cancelled_at = $3 where tenant_id = $1 and id = $2
                returning {_OVERRIDE_COLUMNS}""", tenant_id, override_id, at)
        return override_from_row(row)

    # -- lights and their levels ---------------------------------------------------------------

    async def lights(self, tenant_id: UUID, device_ids: Sequence[UUID] | None = None, *,
                     district: str | None = None) -> list[Light]:
        """Streetlights in service (all but decommissioned), or those among `device_ids` or in `district`."""
        rows = await self.conn.fetch(
            f"""select d.id, d.lat, d.lon, d.district, (d.attributes ->> 'nominal_wattage')::float8 as watts,
                       coalesce(r.object_links like '%</3311/%', false) as has_3311
                from devices d left join registrations r on r.device_id = d.id
                where d.tenant_id = $1 and d.kind = 'streetlight' and d.status <> 'decommissioned'
                  and ($2::uuid[] is null or d.id = any($2::uuid[]))
                  and ($3::text is null or d.district = $3)
                order by d.seq""", tenant_id, None if device_ids is None else list(device_ids), district)
        return [Light(r["id"], r["lat"], r["lon"], r["district"],
                      DIMMER_3311 if r["has_3311"] else COMMAND_3416, r["watts"]) for r in rows]

    async def targets(self, tenant_id: UUID) -> dict[UUID, Target]:
        """The levels last commanded, each with whether it must be sent again:
        - its command expired while the light was away, and the light has been heard from since;
        - the light took it, then registered anew (a restart: it came up at its own default);
        - the light took it, but what it reports since (after DRIFT_SETTLE) is another level
          (a manual change on site, a controller's own program), at most every DRIFT_RETRY.
        """
        rows = await self.conn.fetch(
            """select t.device_id, t.dimming_level, t.path, t.unscheduled, t.resume_level,
                      coalesce((c.status = 'expired' and r.updated_at > c.completed_at)
                               or (c.status = 'succeeded' and r.registered_at > c.completed_at)
                               or (c.status = 'succeeded' and c.completed_at < now() - $3::interval
                                   and s.updated_at > c.completed_at + $4::interval
                                   and s.v_num is distinct from t.dimming_level), false) as redeliver
               from lighting_targets t
               left join commands c on c.id = t.command_id
               left join registrations r on r.device_id = t.device_id
               left join device_state s on s.device_id = t.device_id
                    and s.path = case when t.path = $2 then $5 else t.path end
               where t.tenant_id = $1""", tenant_id, COMMAND_3416, DRIFT_RETRY, DRIFT_SETTLE, MEASURED_3416)
        return {r["device_id"]: Target(r["device_id"], r["dimming_level"], r["path"], r["redeliver"],
                                       r["unscheduled"], r["resume_level"])
                for r in rows}

    async def reported_levels(self, tenant_id: UUID, lights: Sequence[Light]) -> dict[UUID, int]:
        """The level each light last reported (measured where it reports one, else its dimming
        resource as last written or read), for lights that have one."""
        rows = await self.conn.fetch(
            """select distinct on (s.device_id) s.device_id, s.v_num
               from device_state s join unnest($2::uuid[], $3::text[]) as l(device_id, path)
                    on s.device_id = l.device_id
                   and s.path in (l.path, case when l.path = $4 then $5 end)
               where s.tenant_id = $1 and s.v_num is not null
               order by s.device_id, s.path = l.path, s.updated_at desc""",
            tenant_id, [light.device_id for light in lights], [light.dimming_path for light in lights],
            COMMAND_3416, MEASURED_3416)
        return {r["device_id"]: max(0, min(100, round(r["v_num"]))) for r in rows}

    async def delete_targets(self, tenant_id: UUID, device_ids: Sequence[UUID]) -> None:
        if not device_ids:
            return
        await self.conn.execute("delete from lighting_targets where tenant_id = $1 and device_id = any($2::uuid[])",
                                tenant_id, list(device_ids))

    async def save_targets(self, tenant_id: UUID, device_ids: Sequence[UUID], levels: Sequence[int],
                           paths: Sequence[str], since: Sequence[dt.datetime],
                           command_ids: Sequence[UUID | None], unscheduled: Sequence[bool],
                           resume_levels: Sequence[int | None]) -> None:
        await self.conn.execute(
            """insert into lighting_targets as t (tenant_id, device_id, dimming_level, path, since, command_id,
                                                  unscheduled, resume_level)
               select $1, * from unnest($2::uuid[], $3::int[], $4::text[], $5::timestamptz[], $6::uuid[],
                                        $7::bool[], $8::int[])
               on conflict (device_id) do update
                   set dimming_level = excluded.dimming_level, path = excluded.path,
                       since = excluded.since, command_id = excluded.command_id,
                       unscheduled = excluded.unscheduled, resume_level = excluded.resume_level,
                       updated_at = now()""",
            tenant_id, list(device_ids), list(levels), list(paths), list(since), list(command_ids),
            list(unscheduled), list(resume_levels))
