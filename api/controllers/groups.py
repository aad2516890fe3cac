"""/api/v1/groups: device groups over REST, their static members and the devices they hold."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, delete, get, patch, post
from litestar.params import Parameter

from api.schemas import (DevicePage, Group, GroupCreate, GroupMembers, GroupPage, GroupUpdate, KindFilter,
                         StatusFilter, device_out, group_fields, group_out)
from api.problems import problems
from fleet.access.models import Principal
from fleet.groups.service import GroupService

Q = Annotated[str | None, Parameter(required=False)]
Limit = Annotated[int, Parameter(ge=1, le=1000)]


class GroupController(Controller):
    path = "/api/v1/groups"
    tags = ["groups"]

    @post("/", summary="Create a group of static members or a saved filter", responses=problems(403, 409, 422))
    async def create(self, data: GroupCreate, principal: Principal, group_service: GroupService) -> Group:
        return group_out(await group_service.create(principal, group_fields(data)))

    @get("/", summary="List groups by name, with cursor pagination", responses=problems(422))
    async def list_groups(self, principal: Principal, group_service: GroupService,
                          cursor: Q = None, limit: Limit = 100) -> GroupPage:
        page = await group_service.list(principal, cursor=cursor, limit=limit)
        return GroupPage([group_out(g) for g in page.items], page.next_cursor)

    @get("/{group_id:uuid}", summary="One group with its member count")
    async def get_group(self, group_id: UUID, principal: Principal, group_service: GroupService) -> Group:
        return group_out(await group_service.get(principal, group_id))

    @patch("/{group_id:uuid}", summary="Rename, describe, or change the filter (a filter drops static members)",
           responses=problems(403, 409, 422))
    async def update(self, group_id: UUID, data: GroupUpdate, principal: Principal,
                     group_service: GroupService) -> Group:
        return group_out(await group_service.update(principal, group_id, group_fields(data)))

    @delete("/{group_id:uuid}", summary="Delete a group (its devices stay as they are)", responses=problems(403))
    async def delete_group(self, group_id: UUID, principal: Principal, group_service: GroupService) -> None:
        await group_service.delete(principal, group_id)

    @get("/{group_id:uuid}/members", summary="The group's devices, with device filters and cursor pagination",
         responses=problems(422))
    async def list_members(
        self, group_id: UUID, principal: Principal, group_service: GroupService,
        kind: KindFilter = None, status: StatusFilter = None, district: Q = None, tag: Q = None, firmware: Q = None,
        bbox: Annotated[str | None, Parameter(description="min_lon,min_lat,max_lon,max_lat")] = None,
        near: Annotated[str | None, Parameter(description="lat,lon")] = None,
        radius_m: Annotated[str | None, Parameter(description="metres around `near` (default 500)")] = None,
        cursor: Q = None, limit: Limit = 100,
    ) -> DevicePage:
        raw_filter = {"kind": kind, "status": status, "district": district, "tag": tag,
                      "firmware": firmware, "bbox": bbox, "near": near, "radius_m": radius_m}
        page = await group_service.members(principal, group_id, raw_filter, cursor=cursor, limit=limit)
        return DevicePage([device_out(d) for d in page.items], page.next_cursor)

    @post("/{group_id:uuid}/members", summary="Add devices to a static group (idempotent)", status_code=200,
          responses=problems(403, 409, 422))
    async def add_members(self, group_id: UUID, data: GroupMembers, principal: Principal,
                          group_service: GroupService) -> Group:
        return group_out(await group_service.add_members(principal, group_id, data.device_ids))

    @delete("/{group_id:uuid}/members", summary="Remove devices from a static group", status_code=200,
            responses=problems(403, 409, 422))
    async def remove_members(self, group_id: UUID, data: GroupMembers, principal: Principal,
                             group_service: GroupService) -> Group:
        return group_out(await group_service.remove_members(principal, group_id, data.device_ids))

    @delete("/{group_id:uuid}/members/{device_id:uuid}", summary="Remove one device from a static group",
            status_code=200, responses=problems(403, 409))
    async def remove_member(self, group_id: UUID, device_id: UUID, principal: Principal,
                            group_service: GroupService) -> Group:
        return group_out(await group_service.remove_members(principal, group_id, [device_id]))
