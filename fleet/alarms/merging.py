"""Alarm changes on the caller's transaction (findings, reports, work orders), each with its event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from fleet.alarms.lifecycle import Verdict, added_occurrences, is_due, severity_of, verdicts
from fleet.alarms.models import Alarm, AlarmChange, AlarmType, ChangeKind, Finding
from fleet.alarms.repository import AlarmRepository
from fleet.alarms.settings import DEFAULTS, AlarmSettings, merged
from fleet.events.models import ALARM_CLEARED, ALARM_RAISED, ALARM_UPDATED
from fleet.events.repository import EventRepository

SYSTEM_ACTOR = "fleet"

_EVENT_KIND = {ChangeKind.RAISED: ALARM_RAISED, ChangeKind.REPEATED: ALARM_UPDATED,
               ChangeKind.CLEARED: ALARM_CLEARED, ChangeKind.PROVEN_CLEAR: ALARM_UPDATED}


def alarm_payload(alarm: Alarm) -> dict[str, Any]:
    """An alarm as REST renders it (and as events carry it)."""
    out = msgspec.to_builtins(alarm)
    del out["tenant_id"]
    if out.get("distance_m") is None:
        out.pop("distance_m", None)
    return out


class SettingsCache:
    """Merged settings per distinct (city row, group row) pair within one call: a thousand
    devices of one city cost one merge, not a thousand."""

    def __init__(self) -> None:
        self._merged: dict[bytes, AlarmSettings] = {}

    def get(self, city: dict, group: dict) -> AlarmSettings:
        key = msgspec.json.encode([city, group])
        found = self._merged.get(key)
        if found is None:
            found = self._merged[key] = merged(city, group)
        return found


async def settings_for(conn: asyncpg.Connection, pairs: Sequence[tuple[UUID, UUID]]
                       ) -> dict[tuple[UUID, UUID], AlarmSettings]:
    if not pairs:
        return {}
    layers = await AlarmRepository(conn).settings_layers(list(dict.fromkeys(pairs)))
    cache = SettingsCache()
    return {pair: cache.get(city, group) for pair, (city, group) in layers.items()}


async def publish_changes(conn: asyncpg.Connection, changed: dict[UUID, str]) -> list[Alarm]:
    """One event per changed alarm (id -> event kind), the alarm rendered after the change."""
    if not changed:
        return []
    alarms = await AlarmRepository(conn).rendered(list(changed))
    await EventRepository(conn).append_many(
        (a.tenant_id, changed[a.id], "alarm", a.id, alarm_payload(a)) for a in alarms)
    return alarms


async def merge_findings(conn: asyncpg.Connection, found: list[Verdict]) -> list[AlarmChange]:
    """Merge verdicts into alarms on the caller's (system) transaction; returns the transitions."""
    if not found:
        return []
    repo = AlarmRepository(conn)
    rows = await repo.lock_for_findings([v.key for v in found])
    open_alarms = {(r["tenant_id"], r["device_id"], r["type"]): r for r in rows if r["status"] != "cleared"}
    awaiting = {(r["tenant_id"], r["device_id"], r["type"]): r for r in rows if r["status"] == "cleared"}
    interesting = [v for v in found if v.present or v.key in open_alarms or v.key in awaiting]
    if not interesting:
        return []  # the common case at ingest: nothing open, nothing present
    settings = await settings_for(conn, [(v.tenant_id, v.device_id) for v in interesting
                                         if v.present or v.key in open_alarms])
    merges, inserts, clearing, to_clear, proven, severity_only = [], [], [], [], [], []
    kinds: dict[UUID, ChangeKind] = {}
    for v in interesting:
        alarm = open_alarms.get(v.key)
        if alarm is None and not v.present:
            proven.append((awaiting[v.key]["id"], v.absent_since))
            continue
        effective = settings.get((v.tenant_id, v.device_id)) or DEFAULTS
        if alarm is None:
            severity = severity_of(v.type, effective, v.severity)
            inserts.append((v.tenant_id, v.device_id, v.type, severity.value, v.occurrences,
                            v.first_present_at, v.last_present_at, v.absent_since, v.value, v.detail, "device"))
        elif v.present:
            severity = severity_of(v.type, effective, v.severity)
            added = added_occurrences(v, alarm["clearing_since"])
            changed = added > 0 or severity.value != alarm["severity"]
            merges.append((alarm["id"], v.last_present_at, added, v.absent_since, v.value, v.detail,
                           severity.value, changed))
            if added:
                kinds[alarm["id"]] = ChangeKind.REPEATED
            elif changed:
                severity_only.append(alarm["id"])  # people see the new severity; work orders need not
        else:
            since = alarm["clearing_since"] or v.absent_since
            if is_due(since, v.last_at, effective):
                to_clear.append(alarm["id"])
            elif alarm["clearing_since"] is None:
                clearing.append((alarm["id"], since))
    if merges:
        await repo.merge_presence(merges)
    if inserts:
        inserts.sort(key=lambda row: (row[0], row[1], row[2]))  # one order on every node: no deadlock
        for alarm_id, inserted, grew in await repo.insert_raised(inserts):
            if inserted or grew:
                kinds[alarm_id] = ChangeKind.RAISED if inserted else ChangeKind.REPEATED
    if clearing:
        await repo.start_clearing(*zip(*clearing, strict=True))
    for alarm_id in await repo.clear(to_clear, "condition", SYSTEM_ACTOR) if to_clear else []:
        kinds[alarm_id] = ChangeKind.CLEARED
    if proven:
        await repo.verify(*zip(*proven, strict=True))
        kinds.update((alarm_id, ChangeKind.PROVEN_CLEAR) for alarm_id, _at in proven)
    return await changes_published(conn, kinds, also_updated=severity_only)


async def changes_published(conn: asyncpg.Connection, kinds: dict[UUID, ChangeKind], *,
                            also_updated: Sequence[UUID] = ()) -> list[AlarmChange]:
    """Publish an event per changed alarm; the transitions among them, for work orders."""
    events = {**dict.fromkeys(also_updated, ALARM_UPDATED),
              **{alarm_id: _EVENT_KIND[kind] for alarm_id, kind in kinds.items()}}
    alarms = [a for a in await publish_changes(conn, events) if a.id in kinds]
    return [AlarmChange(a.tenant_id, a.id, a.device_id, a.type, a.severity, kinds[a.id], _when(a, kinds[a.id]),
                        shelved=a.shelved_until is not None) for a in alarms]


def _when(alarm: Alarm, kind: ChangeKind) -> datetime:
    return {ChangeKind.RAISED: alarm.first_seen, ChangeKind.REPEATED: alarm.last_seen,
            ChangeKind.CLEARED: alarm.cleared_at, ChangeKind.PROVEN_CLEAR: alarm.verified_at}[kind] or alarm.updated_at


async def offline_findings(conn: asyncpg.Connection, now: datetime, batch: int) -> list[Finding]:
    offline = await AlarmRepository(conn).offline_devices(now, DEFAULTS.offline_grace_minutes, batch)
    settings = await settings_for(conn, [(r["tenant_id"], r["device_id"]) for r in offline])
    findings = []
    for r in offline:
        grace = (settings.get((r["tenant_id"], r["device_id"])) or DEFAULTS).offline_grace_minutes
        if (now - r["offline_since"]).total_seconds() >= grace * 60:
            findings.append(Finding(r["tenant_id"], r["device_id"], AlarmType.DEVICE_OFFLINE, True, now,
                                    detail=f"no registration since {r['offline_since'].isoformat()}"))
    return findings


async def device_back(conn: asyncpg.Connection, tenant_id: UUID, device_id: UUID, at: datetime) -> list[AlarmChange]:
    """A device that was offline registered again: its device_offline alarm starts clearing (or a
    work order's clear is proven), in the registration's transaction."""
    return await merge_findings(conn, verdicts([Finding(tenant_id, device_id, AlarmType.DEVICE_OFFLINE, False, at)]))


async def merge_citizen_report(conn: asyncpg.Connection, tenant_id: UUID, device_id: UUID, detail: str,
                               at: datetime) -> UUID:
    """A citizen saw something: it joins the device's open alarm (the most severe) if it has one,
    else it opens a `citizen_report` alarm. Returns the alarm's id."""
    repo = AlarmRepository(conn)
    open_alarms = await repo.open_for_device(tenant_id, device_id)
    if open_alarms:
        alarm_id = open_alarms[0]["id"]
        await repo.repeat(alarm_id, at)
        await publish_changes(conn, {alarm_id: ALARM_UPDATED})
        return alarm_id
    effective = (await settings_for(conn, [(tenant_id, device_id)])).get((tenant_id, device_id)) or DEFAULTS
    severity = severity_of(AlarmType.CITIZEN_REPORT.value, effective, None)
    [(alarm_id, inserted, _grew)] = await repo.insert_raised([
        (tenant_id, device_id, AlarmType.CITIZEN_REPORT.value, severity.value, 1, at, at, None, None,
         detail[:4000], "citizen")])
    await publish_changes(conn, {alarm_id: ALARM_RAISED if inserted else ALARM_UPDATED})
    return alarm_id


async def clear_for_work_order(conn: asyncpg.Connection, tenant_id: UUID, alarm_ids: Sequence[UUID], by: str,
                               at: datetime) -> list[AlarmChange]:
    """A work order closed: its alarms clear (reason `work_order`) until the device proves it.

    Returns the proofs already in hand (PROVEN_CLEAR, at `at`): a repaired device reports the
    condition gone at once, usually before the crew closes the work order, and one that reports
    only changes says nothing more; waiting for a "next" report would leave its repair unproven."""
    if not alarm_ids:
        return []
    repo = AlarmRepository(conn)
    proven = await repo.reported_gone(tenant_id, alarm_ids)
    await _clear_and_publish(conn, tenant_id, alarm_ids, "work_order", by, at)
    if not proven:
        return []
    await repo.verify(proven, [at] * len(proven))
    return await changes_published(conn, dict.fromkeys(proven, ChangeKind.PROVEN_CLEAR))


async def clear_for_decommissioned(conn: asyncpg.Connection, tenant_id: UUID, device_id: UUID, by: str) -> None:
    """A device out of service leaves no open alarm behind."""
    ids = await AlarmRepository(conn).open_ids_for_device(tenant_id, device_id)
    await _clear_and_publish(conn, tenant_id, ids, "decommissioned", by, None)


async def _clear_and_publish(conn: asyncpg.Connection, tenant_id: UUID, alarm_ids: Sequence[UUID], reason: str,
                             by: str, at: datetime | None) -> None:
    if not alarm_ids:
        return
    cleared = await AlarmRepository(conn).clear(alarm_ids, reason, by, at, tenant_id=tenant_id)
    await publish_changes(conn, dict.fromkeys(cleared, ALARM_CLEARED))


