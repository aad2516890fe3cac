"""Pure rules of the alarm lifecycle: what a batch of findings says per (device, type)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from fleet.alarms.models import DEFAULT_SEVERITY, AlarmType, Finding, Severity
from fleet.alarms.settings import AlarmSettings

Key = tuple[UUID, UUID, str]  # tenant, device, alarm type


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every finding of one call about one (device, type), reduced to what the lifecycle needs.

    `occurrences` counts runs of presence: present, absent, present is two occurrences; a
    thousand present reports in a row are one. `absent_since` is the first absence after the
    last presence (None when the last word was "present"); `last_at` the newest finding.
    """

    tenant_id: UUID
    device_id: UUID
    type: str
    first_present_at: datetime | None
    last_present_at: datetime | None
    absent_since: datetime | None
    last_at: datetime
    occurrences: int
    starts_present: bool
    value: Any
    detail: str
    severity: Severity | None

    @property
    def present(self) -> bool:
        return self.last_present_at is not None

    @property
    def key(self) -> Key:
        return self.tenant_id, self.device_id, self.type


def verdicts(findings: Sequence[Finding]) -> list[Verdict]:
    """One verdict per (tenant, device, type), the findings taken in time order."""
    grouped: dict[Key, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault((finding.tenant_id, finding.device_id, str(finding.type)), []).append(finding)
    out = []
    for (tenant_id, device_id, alarm_type), items in grouped.items():
        items.sort(key=lambda f: f.at)
        occurrences, previous, first_present, last_present, absent_since = 0, False, None, None, None
        for finding in items:
            if finding.present:
                occurrences += not previous
                first_present = first_present or finding
                last_present, absent_since = finding, None
            elif absent_since is None:
                absent_since = finding.at
            previous = finding.present
        out.append(Verdict(
            tenant_id, device_id, alarm_type,
            first_present.at if first_present else None, last_present.at if last_present else None,
            absent_since, items[-1].at, occurrences, items[0].present,
            last_present.value if last_present else None, last_present.detail if last_present else "",
            last_present.severity if last_present else None))
    return out


def severity_of(alarm_type: str, settings: AlarmSettings, reported: Severity | None) -> Severity:
    """The city's (or group's) configured severity wins, then the rule's, then the type's default."""
    configured = settings.severities.get(alarm_type)
    if configured:
        return Severity(configured)
    if reported is not None:
        return Severity(reported)
    try:
        return DEFAULT_SEVERITY[AlarmType(alarm_type)]
    except ValueError:
        return Severity.MINOR


def added_occurrences(verdict: Verdict, clearing_since: datetime | None) -> int:
    """How much an open alarm's count grows: a presence right after a period of absence (the
    alarm was clearing) is a new occurrence; a presence continuing the last one is not."""
    if verdict.occurrences == 0:
        return 0
    continues = verdict.starts_present and clearing_since is None
    return verdict.occurrences - (1 if continues else 0)


def is_due(clearing_since: datetime | None, now: datetime, settings: AlarmSettings) -> bool:
    """Absent long enough: hysteresis, so a flapping signal keeps one alarm."""
    if clearing_since is None:
        return False
    return (now - clearing_since).total_seconds() >= settings.clear_after_minutes * 60
