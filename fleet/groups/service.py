"""Use cases of device groups; each owns its transaction and writes its audit entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from fleet import cursors
from fleet.access.models import Permission, Principal
from fleet.audit.service import record
from fleet.db import Database
from fleet.errors import Conflict, FieldError, NotFound, ValidationFailed
from fleet.groups.models import DeviceGroup
from fleet.groups.repository import GroupRepository
from fleet.groups.validation import (device_ids, member_filter, validate_group_changes,
                                     validate_new_group)
from fleet.registry.models import DeviceFilter, Page
from fleet.registry.repository import DeviceRepository
from fleet.registry.service import MAX_PAGE, DeviceService, require

MAX_CURSOR = 1000


def encode_cursor(group: DeviceGroup) -> str:
    return cursors.encode(b"g:", [group.name, str(group.id)])


def decode_cursor(cursor: str) -> tuple[str, UUID]:
    return cursors.decode(b"g:", cursor, tuple[str, UUID], max_length=MAX_CURSOR)


def _in_order(requested: Sequence[UUID], chosen: set[UUID]) -> list[UUID]:
    return [device_id for device_id in requested if device_id in chosen]


class GroupService:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.devices = DeviceService(db)

    async def create(self, principal: Principal, raw: Mapping[str, Any]) -> DeviceGroup:
        require(principal, Permission.MANAGE_GROUPS)
        new = validate_new_group(raw)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = GroupRepository(conn)
            await _known_district(conn, principal.tenant_id, new.filter)
            try:
                async with conn.transaction():
                    group_id = await repo.insert(principal.tenant_id, new)
            except asyncpg.UniqueViolationError:
                raise _duplicate_name(new.name) from None
            added = await _add_members(repo, principal.tenant_id, group_id, new.device_ids)
            group = await repo.get(principal.tenant_id, group_id)
            await record(conn, principal, "group.create", "group", group_id, None, group)
            if added:
                await record(conn, principal, "group.members.add", "group", group_id,
                             None, {"device_ids": added})
        return group

    async def get(self, principal: Principal, group_id: UUID) -> DeviceGroup:
        require(principal, Permission.READ)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            group = await GroupRepository(conn).get(principal.tenant_id, group_id)
        if group is None:
            raise NotFound(f"group {group_id} not found")
        return group

    async def list(self, principal: Principal, *, cursor: str | None = None, limit: int = 100) -> Page:
        """Groups in name order (then id, for a stable cursor), each with its member count."""
        require(principal, Permission.READ)
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed("invalid limit", [FieldError("limit", f"must be 1-{MAX_PAGE}")])
        after = decode_cursor(cursor) if cursor else None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            groups, more = await GroupRepository(conn).page(principal.tenant_id, after=after, limit=limit)
        return Page(groups, encode_cursor(groups[-1]) if more else None)

    async def update(self, principal: Principal, group_id: UUID, raw: Mapping[str, Any]) -> DeviceGroup:
        """Change name, description or filter. Giving a static group a filter drops its members
        (they are named in a group.members.remove entry); `filter: None` makes a dynamic group
        static and empty."""
        require(principal, Permission.MANAGE_GROUPS)
        changes = validate_group_changes(raw)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = GroupRepository(conn)
            before = await repo.get(principal.tenant_id, group_id, for_update=True)
            if before is None:
                raise NotFound(f"group {group_id} not found")
            changes = changes.relative_to(before)
            if changes.is_empty():
                return before
            await _known_district(conn, principal.tenant_id, changes.filter)
            dropped: set[UUID] = set()
            if changes.filter_set and changes.filter is not None and not before.is_dynamic:
                dropped = await repo.remove_members(principal.tenant_id, group_id, None)
            try:
                async with conn.transaction():
                    await repo.update(principal.tenant_id, group_id, changes)
            except asyncpg.UniqueViolationError:
                raise _duplicate_name(changes.name) from None
            after = await repo.get(principal.tenant_id, group_id)
            if dropped:
                await record(conn, principal, "group.members.remove", "group", group_id,
                             {"device_ids": sorted(dropped)}, None)
            await record(conn, principal, "group.update", "group", group_id, before, after)
        return after

    async def delete(self, principal: Principal, group_id: UUID) -> None:
        """Delete a group for good: groups are configuration, and the audit log keeps the last state."""
        require(principal, Permission.MANAGE_GROUPS)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = GroupRepository(conn)
            before = await repo.get(principal.tenant_id, group_id, for_update=True)
            if before is None:
                raise NotFound(f"group {group_id} not found")
            dropped = await repo.remove_members(principal.tenant_id, group_id, None)
            await repo.delete(principal.tenant_id, group_id)
            if dropped:
                await record(conn, principal, "group.members.remove", "group", group_id,
                             {"device_ids": sorted(dropped)}, None)
            await record(conn, principal, "group.delete", "group", group_id, before, None)

    async def add_members(self, principal: Principal, group_id: UUID, raw_ids: Any) -> DeviceGroup:
        """Add devices to a static group; ids already there are fine, unknown ids reject the lot."""
        require(principal, Permission.MANAGE_GROUPS)
        ids = device_ids(raw_ids, required=True)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = GroupRepository(conn)
            group = await _static_group(repo, principal.tenant_id, group_id)
            added = await _add_members(repo, principal.tenant_id, group_id, ids)
            if not added:
                return group
            await repo.touch(principal.tenant_id, group_id)
            after = await repo.get(principal.tenant_id, group_id)
            await record(conn, principal, "group.members.add", "group", group_id, None, {"device_ids": added})
        return after

    async def remove_members(self, principal: Principal, group_id: UUID, raw_ids: Any) -> DeviceGroup:
        """Remove devices from a static group; ids that are not members are ignored."""
        require(principal, Permission.MANAGE_GROUPS)
        ids = device_ids(raw_ids, required=True)
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = GroupRepository(conn)
            group = await _static_group(repo, principal.tenant_id, group_id)
            removed = _in_order(ids, await repo.remove_members(principal.tenant_id, group_id, ids))
            if not removed:
                return group
            await repo.touch(principal.tenant_id, group_id)
            after = await repo.get(principal.tenant_id, group_id)
            await record(conn, principal, "group.members.remove", "group", group_id, {"device_ids": removed}, None)
        return after

    async def members(self, principal: Principal, group_id: UUID, raw_filter: Mapping[str, Any], *,
                      cursor: str | None = None, limit: int = 100) -> Page:
        """The group's devices, further filtered, as the registry lists devices (same cursor)."""
        return await self.devices.list(principal, member_filter(group_id, raw_filter),
                                       cursor=cursor, limit=limit)


async def _static_group(repo: GroupRepository, tenant_id: UUID, group_id: UUID) -> DeviceGroup:
    group = await repo.get(tenant_id, group_id, for_update=True)
    if group is None:
        raise NotFound(f"group {group_id} not found")
    if group.is_dynamic:
        raise Conflict(f"group {group_id} is defined by a filter; its members cannot be changed one by one")
    return group


async def _add_members(repo: GroupRepository, tenant_id: UUID, group_id: UUID,
                       ids: Sequence[UUID]) -> list[UUID]:
    """Adds live devices of this city; any other id rejects the whole request, naming it."""
    if not ids:
        return []
    statuses = await repo.device_statuses(tenant_id, ids)
    # Another city's device reads exactly like an unknown one.
    errors = [FieldError("device_ids", f"{device_id}: no such device in this city")
              for device_id in ids if device_id not in statuses]
    errors += [FieldError("device_ids", f"{device_id}: decommissioned devices cannot join a group")
               for device_id in ids if statuses.get(device_id) == "decommissioned"]
    if errors:
        raise ValidationFailed("some devices cannot be added; no member was added", errors)
    return _in_order(ids, await repo.add_members(tenant_id, group_id, ids))


def _duplicate_name(name: str | None) -> Conflict:
    return Conflict(f"a group named {name!r} already exists in this city",
                    [FieldError("name", "is already taken in this city")])


async def _known_district(conn: asyncpg.Connection, tenant_id: UUID, saved: DeviceFilter | None) -> None:
    """A filter about to be saved names a district some device stands in (422 otherwise)."""
    if saved is not None:
        await DeviceRepository(conn).require_known_district(tenant_id, saved.district, "filter.district")
