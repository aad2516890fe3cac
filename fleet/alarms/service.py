"""Use cases of alarms: findings at ingest rate, the sweep, and what people do with alarms."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from fleet.access.models import Permission, Principal, Role
from fleet.alarms.filters import decode_cursor, encode_cursor, parse_query
from fleet.alarms.lifecycle import is_due, verdicts
from fleet.alarms.merging import (SYSTEM_ACTOR, changes_published, clear_for_decommissioned,
                                  clear_for_work_order, device_back, merge_citizen_report, merge_findings,
                                  offline_findings, publish_changes, settings_for)
from fleet.alarms.models import (Acknowledge, Alarm, AlarmChange, AlarmCounts, AlarmStatus, ChangeKind,
                                 DeviceShelve, Finding, ManualClear, Shelve, Shelving)
from fleet.alarms.repository import AlarmRepository
from fleet.alarms.settings import DEFAULTS, AlarmSettings, merged, validate_overrides
from fleet.audit.service import record
from fleet.db import Database
from fleet.errors import Conflict, FieldError, NotFound, PermissionDenied, ValidationFailed
from fleet.events.models import ALARM_UPDATED
from fleet.groups.repository import GroupRepository
from fleet.registry.models import Page
from fleet.registry.repository import DeviceRepository
from fleet.registry.service import MAX_PAGE, require

log = structlog.get_logger(__name__)

OnChanges = Callable[[asyncpg.Connection, list[AlarmChange]], Awaitable[None]]
SWEEP_BATCH = 1000
# Who may change thresholds: the people who run the city's network, not its crews.
SETTINGS_ROLES = (Role.ADMIN, Role.OPERATOR)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SettingsView:
    effective: AlarmSettings
    defaults: AlarmSettings
    overrides: dict[str, Any]
    city_overrides: dict[str, Any] | None = None  # on a group's view: what it overrides in turn


class AlarmService:
    """Findings in, alarms out; `on_changes` hears every transition inside its transaction."""

    def __init__(self, db: Database, *, on_changes: OnChanges | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.db = db
        self.on_changes = on_changes
        self.clock = clock

    # --- the device side ---

    async def apply(self, findings: Sequence[Finding]) -> None:
        """One system transaction per call, whatever the cities of the findings."""
        if not findings:
            return
        found = verdicts(findings)
        async with self.db.system_tx() as conn:
            await self._hand_over(conn, await merge_findings(conn, found))

    async def _hand_over(self, conn: asyncpg.Connection, changes: list[AlarmChange]) -> None:
        if changes:
            log.debug("alarm changes", changes=len(changes))
            if self.on_changes is not None:
                await self.on_changes(conn, changes)

    async def device_back(self, conn: asyncpg.Connection, tenant_id: UUID, device_id: UUID) -> None:
        """A device offline beyond its lifetime registered again (on the registration's transaction)."""
        await self._hand_over(conn, await device_back(conn, tenant_id, device_id, self.clock()))

    async def effective_settings(self, tenant_id: UUID, device_ids: Sequence[UUID]) -> dict[UUID, AlarmSettings]:
        """Read on every call (no cache), so a change made on any node applies at once."""
        if not device_ids:
            return {}
        async with self.db.tenant_tx(tenant_id, readonly=True) as conn:
            found = await settings_for(conn, [(tenant_id, d) for d in device_ids])
        return {device_id: settings for (_tenant, device_id), settings in found.items()}

    async def sweep(self, *, batch: int = SWEEP_BATCH) -> int:
        """Clear alarms absent for their clear_after_minutes, and raise device_offline for devices
        past their lifetime and grace: neither waits for a finding. Safe on every node at once
        (one sweeps, the others skip). Returns how many alarms changed."""
        async with self.db.system_tx() as conn:
            repo = AlarmRepository(conn)
            if not await repo.try_sweep_lock():
                return 0
            now = self.clock()
            clearing = await repo.due_to_clear(now, DEFAULTS.clear_after_minutes, batch)
            settings = await settings_for(conn, [(r["tenant_id"], r["device_id"]) for r in clearing])
            due = [r["id"] for r in clearing
                   if is_due(r["clearing_since"], now, settings.get((r["tenant_id"], r["device_id"])) or DEFAULTS)]
            cleared = await repo.clear(due, "condition", SYSTEM_ACTOR) if due else []
            changes = await changes_published(conn, dict.fromkeys(cleared, ChangeKind.CLEARED))
            changes += await merge_findings(conn, verdicts(await offline_findings(conn, now, batch)))
            await self._hand_over(conn, changes)
        return len(changes)

    # --- what people do ---

    async def list(self, principal: Principal, raw: Mapping[str, Any], *, cursor: str | None = None,
                   limit: int = 100) -> Page:
        require(principal, Permission.READ)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed("invalid limit", [FieldError("limit", f"must be 1-{MAX_PAGE}")])
        query = parse_query(raw)
        after = decode_cursor(cursor, query.near is not None) if cursor else None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            await DeviceRepository(conn).require_known_district(principal.tenant_id, query.district)
            alarms, last = await AlarmRepository(conn).list(principal.tenant_id, query, after=after, limit=limit)
        return Page(alarms, encode_cursor(last) if last is not None else None)

    async def counts(self, principal: Principal, raw: Mapping[str, Any]) -> AlarmCounts:
        require(principal, Permission.READ)
        query = parse_query(raw)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            await DeviceRepository(conn).require_known_district(principal.tenant_id, query.district)
            return await AlarmRepository(conn).counts(principal.tenant_id, query)

    async def get(self, principal: Principal, alarm_id: UUID) -> Alarm:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await _existing(AlarmRepository(conn), principal.tenant_id, alarm_id)

    async def acknowledge(self, principal: Principal, alarm_id: UUID, command: Acknowledge) -> Alarm:
        """Acknowledging an acknowledged alarm keeps the first acknowledgement."""
        require(principal, Permission.MANAGE_ALARMS)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = AlarmRepository(conn)
            before = await _existing(repo, principal.tenant_id, alarm_id, for_update=True)
            if before.status is AlarmStatus.CLEARED:
                raise Conflict(f"alarm {alarm_id} is cleared; only open alarms can be acknowledged")
            if before.status is AlarmStatus.ACKNOWLEDGED:
                return before
            await repo.acknowledge(alarm_id, principal.actor, command.note)
            [after] = await publish_changes(conn, {alarm_id: ALARM_UPDATED})
            await record(conn, principal, "alarm.acknowledge", "alarm", alarm_id, before, after)
        return after

    async def shelve(self, principal: Principal, alarm_id: UUID, command: Shelve) -> Alarm:
        require(principal, Permission.MANAGE_ALARMS)
        until = self._until(command, principal)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = AlarmRepository(conn)
            before = await _existing(repo, principal.tenant_id, alarm_id, for_update=True)
            if before.status is AlarmStatus.CLEARED:
                raise Conflict(f"alarm {alarm_id} is cleared; there is nothing to silence")
            await repo.shelve(principal.tenant_id, alarm_id=alarm_id, device_id=None, until=until,
                              reason=command.reason, by=principal.actor)
            await repo.touch([alarm_id])
            [after] = await publish_changes(conn, {alarm_id: ALARM_UPDATED})
            await record(conn, principal, "alarm.shelve", "alarm", alarm_id, before, after)
        return after

    async def shelve_device(self, principal: Principal, command: DeviceShelve) -> Shelving:
        """Silence every alarm of a device, open now or raised until then."""
        require(principal, Permission.MANAGE_ALARMS)
        until = self._until(command, principal)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            if await DeviceRepository(conn).get(principal.tenant_id, command.device_id) is None:
                raise NotFound(f"device {command.device_id} not found")
            repo = AlarmRepository(conn)
            shelving = await repo.shelve(principal.tenant_id, alarm_id=None, device_id=command.device_id,
                                         until=until, reason=command.reason, by=principal.actor)
            open_ids = await repo.open_ids_for_device(principal.tenant_id, command.device_id)
            await repo.touch(open_ids)
            await publish_changes(conn, dict.fromkeys(open_ids, ALARM_UPDATED))
            await record(conn, principal, "alarm.shelve_device", "device", command.device_id, None, shelving)
        return shelving

    async def clear(self, principal: Principal, alarm_id: UUID, command: ManualClear) -> Alarm:
        """By hand, where the condition cannot be observed; work orders hear of it as any clear."""
        require(principal, Permission.MANAGE_ALARMS)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = AlarmRepository(conn)
            before = await _existing(repo, principal.tenant_id, alarm_id, for_update=True)
            if before.status is AlarmStatus.CLEARED:
                raise Conflict(f"alarm {alarm_id} is already cleared")
            await repo.clear([alarm_id], "manual", principal.actor, note=command.note, tenant_id=principal.tenant_id)
            changes = await changes_published(conn, {alarm_id: ChangeKind.CLEARED})
            after = await repo.get(principal.tenant_id, alarm_id)
            await record(conn, principal, "alarm.clear", "alarm", alarm_id, before, after)
            await self._hand_over(conn, changes)
        return after

    def _until(self, command: Shelve, principal: Principal) -> datetime:
        now = self.clock()
        if (command.until is None) == (command.minutes is None):
            raise ValidationFailed("give exactly one of until and minutes",
                                   [FieldError("until", "give until or minutes, not both or neither")])
        if command.minutes is not None:
            return now + timedelta(minutes=command.minutes)
        # A time without an offset is the control room's wall clock: the city's, not UTC.
        until = command.until if command.until.tzinfo else command.until.replace(
            tzinfo=ZoneInfo(principal.tenant_timezone) if principal.tenant_timezone else UTC)
        if until <= now or until > now + timedelta(days=90):
            raise ValidationFailed("invalid shelving", [FieldError("until", "must be within the next 90 days")])
        return until

    # --- settings ---

    async def settings(self, principal: Principal, group_id: UUID | None = None) -> SettingsView:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await self._settings_view(conn, principal.tenant_id, group_id)

    async def store_settings(self, principal: Principal, raw: object, group_id: UUID | None = None) -> SettingsView:
        """Replace the city's (or a group's) overrides; every node applies them from the next finding."""
        self._may_change_settings(principal)
        overrides = validate_overrides(raw)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            before = await self._settings_view(conn, principal.tenant_id, group_id, for_update=True)
            await AlarmRepository(conn).store_settings(principal.tenant_id, group_id, overrides)
            await record(conn, principal, "alarm_settings.update", "group" if group_id else "alarm_settings",
                         group_id or principal.tenant_id, before.overrides, overrides)
            return await self._settings_view(conn, principal.tenant_id, group_id)

    async def delete_group_settings(self, principal: Principal, group_id: UUID) -> None:
        self._may_change_settings(principal)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            before = await self._settings_view(conn, principal.tenant_id, group_id, for_update=True)
            if not await AlarmRepository(conn).delete_settings(principal.tenant_id, group_id):
                raise NotFound(f"group {group_id} has no alarm settings")
            await record(conn, principal, "alarm_settings.delete", "group", group_id, before.overrides, None)

    def _may_change_settings(self, principal: Principal) -> None:
        require(principal, Permission.MANAGE_ALARMS)
        if principal.role not in SETTINGS_ROLES:
            raise PermissionDenied(f"role {principal.role.value} may not change alarm settings")

    async def _settings_view(self, conn: asyncpg.Connection, tenant_id: UUID, group_id: UUID | None, *,
                             for_update: bool = False) -> SettingsView:
        repo = AlarmRepository(conn)
        city = await repo.stored_settings(tenant_id, None) or {}
        if group_id is None:
            return SettingsView(merged(city), DEFAULTS, city)
        group = await GroupRepository(conn).get(tenant_id, group_id, for_update=for_update)
        if group is None:
            raise NotFound(f"group {group_id} not found")
        if group.is_dynamic:
            # Settings follow static membership, which the hot path reads by index.
            raise Conflict("alarm settings apply to groups of static members, not to saved filters")
        own = await repo.stored_settings(tenant_id, group_id) or {}
        return SettingsView(merged(city, own), DEFAULTS, own, city)


async def _existing(repo: AlarmRepository, tenant_id: UUID, alarm_id: UUID, *, for_update: bool = False) -> Alarm:
    alarm = await repo.get(tenant_id, alarm_id, for_update=for_update)
    if alarm is None:
        raise NotFound(f"alarm {alarm_id} not found")
    return alarm


__all__ = ["AlarmService", "SettingsView", "clear_for_decommissioned", "clear_for_work_order",
           "merge_citizen_report"]
