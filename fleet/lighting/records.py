"""What a city stores about its lighting: named programs and calendars, assignments, overrides, targets.

The pure TALQ models (`fleet.lighting.models`) know programs and calendars by string ids; here
those ids are the stored rows' UUIDs as text, so a loaded calendar is the pure model as is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from fleet.lighting.models import Calendar, CalendarRule, ControlProgram, Override


@dataclass(frozen=True, slots=True)
class StoredProgram:
    id: UUID
    name: str
    description: str
    program: ControlProgram
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class StoredCalendar:
    id: UUID
    name: str
    description: str
    default_program_id: UUID
    rules: tuple[CalendarRule, ...]
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def program_ids(self) -> set[UUID]:
        return {self.default_program_id, *(UUID(rule.program_id) for rule in self.rules)}

    def calendar(self, programs: Mapping[UUID, ControlProgram]) -> Calendar:
        """The pure calendar, with the programs it uses taken from `programs`."""
        return Calendar(str(self.id), [programs[program_id] for program_id in sorted(self.program_ids)],
                        str(self.default_program_id), self.rules)


@dataclass(frozen=True, slots=True)
class Assignment:
    """A calendar for every light of a group, or of a district; exactly one of the two is set."""

    id: UUID
    calendar_id: UUID
    group_id: UUID | None
    district: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class OverrideScope:
    """Which lights an override covers: exactly one of a district, a group, or listed devices."""

    district: str | None = None
    group_id: UUID | None = None
    device_ids: tuple[UUID, ...] = ()

    @property
    def label(self) -> str:
        if self.district is not None:
            return f"district:{self.district}"
        if self.group_id is not None:
            return f"group:{self.group_id}"
        return f"devices:{len(self.device_ids)}"


@dataclass(frozen=True, slots=True)
class StoredOverride:
    id: UUID
    scope: OverrideScope
    dimming_level: int
    priority: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    reason: str
    created_at: dt.datetime
    cancelled_at: dt.datetime | None = None
    created_by: UUID | None = None

    @property
    def effective_end(self) -> dt.datetime:
        """Cancelling ends an override early; the calendar resumes from that moment."""
        return self.ends_at if self.cancelled_at is None else min(self.ends_at, self.cancelled_at)

    def is_active(self, at: dt.datetime) -> bool:
        return self.starts_at <= at < self.effective_end

    def model(self) -> Override | None:
        """The pure override as it acts on the timeline; None if cancelled before it began."""
        if self.effective_end <= self.starts_at:
            return None
        return Override(str(self.id), self.scope.label, self.dimming_level, self.priority,
                        self.starts_at, self.effective_end, self.created_at)


@dataclass(frozen=True, slots=True)
class Light:
    """A streetlight as the scheduler sees it: where it stands and which resource dims it."""

    device_id: UUID
    lat: float
    lon: float
    district: str | None
    # /3311/0/5851 when the light registered a Light Control object, else /3416/0/1.
    dimming_path: str
    nominal_wattage: float | None = None

    @property
    def location(self) -> tuple[float, float]:
        return self.lat, self.lon


@dataclass(frozen=True, slots=True)
class Target:
    """The level the scheduler last commanded a light, and whether that command needs redoing."""

    device_id: UUID
    dimming_level: int
    path: str
    # The level must be sent again (see LightingRepository.targets for when).
    redeliver: bool = False
    # Set by an override on a light no calendar governs; it returns to `resume_level` (when
    # known) once no override covers it any more.
    unscheduled: bool = False
    resume_level: int | None = None
