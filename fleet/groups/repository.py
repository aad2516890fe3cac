"""SQL for device groups: the group rows, their static members and member counts."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from fleet.groups.models import DeviceGroup, GroupChanges, NewGroup
from fleet.registry.filters import filter_to_json, parse_filter
from fleet.registry.models import DeviceFilter
from fleet.registry.repository import FilterSql

GROUP_COLUMNS = "g.id, g.name, g.description, g.filter, g.created_at, g.updated_at"


def _saved_filter(row: asyncpg.Record) -> DeviceFilter | None:
    return None if row["filter"] is None else parse_filter(row["filter"], allow_group=False)


class GroupRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(self, tenant_id: UUID, group: NewGroup) -> UUID:
        return await self.conn.fetchval(
            "insert into device_groups (tenant_id, name, description, filter) values ($1, $2, $3, $4) "
            "returning id", tenant_id, group.name, group.description,
            None if group.filter is None else filter_to_json(group.filter))

    async def get(self, tenant_id: UUID, group_id: UUID, *, for_update: bool = False) -> DeviceGroup | None:
        lock = " for update" if for_update else ""
        row = await self.conn.fetchrow(
            f"select {GROUP_COLUMNS} from device_groups g where g.tenant_id = $1 and g.id = $2{lock}",
            tenant_id, group_id)
        if row is None:
            return None
        return (await self._with_member_counts(tenant_id, [row]))[0]

    async def page(self, tenant_id: UUID, *, after: tuple[str, UUID] | None,
                   limit: int) -> tuple[list[DeviceGroup], bool]:
        """One page in (name, id) order; returns the groups and whether more follow."""
        params: list = [tenant_id]
        keyset = ""
        if after is not None:
            params += list(after)
            keyset = " and (g.name, g.id) > ($2, $3)"
        params.append(limit + 1)
        rows = await self.conn.fetch(
            f"select {GROUP_COLUMNS} from device_groups g where g.tenant_id = $1{keyset} "
            f"order by g.name, g.id limit ${len(params)}", *params)
        groups = await self._with_member_counts(tenant_id, rows[:limit])
        return groups, len(rows) > limit

    async def update(self, tenant_id: UUID, group_id: UUID, changes: GroupChanges) -> None:
        assignments, params = [], [tenant_id, group_id]
        for name in ("name", "description"):
            if getattr(changes, name) is not None:
                params.append(getattr(changes, name))
                assignments.append(f"{name} = ${len(params)}")
        if changes.filter_set:
            params.append(None if changes.filter is None else filter_to_json(changes.filter))
            assignments.append(f"filter = ${len(params)}")
        assignments.append("updated_at = now()")
        await self.conn.execute(
            f"update device_groups set {', '.join(assignments)} where tenant_id = $1 and id = $2",
            *params)

    async def touch(self, tenant_id: UUID, group_id: UUID) -> None:
        await self.conn.execute(
            "update device_groups set updated_at = now() where tenant_id = $1 and id = $2",
            tenant_id, group_id)

    async def delete(self, tenant_id: UUID, group_id: UUID) -> None:
        # Static members go with the group (on delete cascade).
        await self.conn.execute("delete from device_groups where tenant_id = $1 and id = $2",
                                tenant_id, group_id)

    async def device_statuses(self, tenant_id: UUID, device_ids: Sequence[UUID]) -> dict[UUID, str]:
        """The status of each of these ids that is a device of this city; other ids are absent."""
        rows = await self.conn.fetch(
            "select id, status from devices where tenant_id = $1 and id = any($2::uuid[])",
            tenant_id, list(device_ids))
        return {r["id"]: r["status"] for r in rows}

    async def add_members(self, tenant_id: UUID, group_id: UUID, device_ids: Sequence[UUID]) -> set[UUID]:
        """Adds the city's live devices among `device_ids`; returns those not already members."""
        rows = await self.conn.fetch(
            """insert into device_group_members (tenant_id, group_id, device_id)
               select $1, $2, d.id from devices d
               where d.tenant_id = $1 and d.id = any($3::uuid[]) and d.status <> 'decommissioned'
               on conflict (group_id, device_id) do nothing
               returning device_id""",
            tenant_id, group_id, list(device_ids))
        return {r["device_id"] for r in rows}

    async def remove_members(self, tenant_id: UUID, group_id: UUID,
                             device_ids: Sequence[UUID] | None) -> set[UUID]:
        """Removes these members (every member when None); returns the ids that were members."""
        rows = await self.conn.fetch(
            """delete from device_group_members
               where tenant_id = $1 and group_id = $2 and ($3::uuid[] is null or device_id = any($3::uuid[]))
               returning device_id""",
            tenant_id, group_id, None if device_ids is None else list(device_ids))
        return {r["device_id"] for r in rows}

    async def _with_member_counts(self, tenant_id: UUID, rows: Sequence[asyncpg.Record]) -> list[DeviceGroup]:
        """Counts every group's members in one statement: one count per group, unioned.

        A group counts what its member listing shows, so the count is built from the same
        FilterSql as the listing: the saved filter, or membership for a static group.
        """
        if not rows:
            return []
        filters = [_saved_filter(r) for r in rows]
        parts, params = [], []
        for row, saved in zip(rows, filters, strict=True):
            sql = FilterSql(tenant_id, saved or DeviceFilter(group_id=row["id"]), first_param=len(params) + 1)
            label = sql.param(row["id"])
            parts.append(f"select {label}::uuid as group_id, count(*) as members from devices d where {sql.where}")
            params += sql.params
        counts = {r["group_id"]: r["members"] for r in await self.conn.fetch(" union all ".join(parts), *params)}
        return [DeviceGroup(id=r["id"], name=r["name"], description=r["description"], filter=saved,
                            member_count=counts[r["id"]], created_at=r["created_at"],
                            updated_at=r["updated_at"])
                for r, saved in zip(rows, filters, strict=True)]
