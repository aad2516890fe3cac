"""/api/v1/firmware/campaigns and /api/v1/firmware/windows: rolling a firmware image out in waves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from litestar import Controller, delete, get, post
from litestar.params import Parameter
from msgspec import Meta, Struct

from api.controllers.commands import CommandTarget, to_target
from api.problems import problems
from fleet.access.models import Principal
from fleet.campaigns.models import (Campaign, CampaignDevice, CampaignDeviceTimeline, CampaignRequest,
                                    CampaignSettings, CampaignStatus, DeviceState, WindowCreate)
from fleet.campaigns.models import MaintenanceWindow as StoredWindow
from fleet.campaigns.maintenance import MaintenanceWindowService
from fleet.campaigns.service import CampaignService
from fleet.errors import FieldError, ValidationFailed

Q = Annotated[str | None, Parameter(required=False)]
Limit = Annotated[int, Parameter(ge=1, le=1000)]
# Optional filters (empty: none); the domain's enums say what they accept (422 otherwise).
StatusFilter = Annotated[str | None, Parameter(required=False, schema_extra={
    "enum": ["", *(s.value for s in CampaignStatus)]})]
# `state` is a name Litestar keeps for itself: the parameter is called so only on the wire.
StateFilter = Annotated[str | None, Parameter(query="state", required=False, schema_extra={
    "enum": ["", *(s.value for s in DeviceState)]})]


# gt=-1 rather than ge=0: Litestar 2 leaves a bound of 0 out of the document.
Wave = Annotated[int | None, Parameter(required=False, gt=-1, le=1_000_000)]


class MaintenanceWindow(Struct):
    """A maintenance window as shown: local times as given (HH:MM)."""

    id: UUID
    group_id: UUID | None
    name: str
    start: str
    end: str
    weekdays: list[int]


def window_out(w: StoredWindow) -> MaintenanceWindow:
    return MaintenanceWindow(w.id, w.group_id, w.name, w.starts.strftime("%H:%M"), w.ends.strftime("%H:%M"),
                             list(w.weekdays))


class CampaignCreate(CampaignSettings, forbid_unknown_fields=True, kw_only=True):
    """A campaign: the image, the target as commands take it, and the settings at the top level."""

    image_id: UUID
    target: CommandTarget
    name: Annotated[str, Meta(max_length=200)] = ""
    start_at: Annotated[datetime, Meta(tz=True, description="a scheduled start (with its offset)")] | None = None


class DeviceSelection(Struct, forbid_unknown_fields=True):
    """Which devices a retry or a cancel is about; absent: all the campaign's."""

    device_ids: Annotated[list[UUID], Meta(min_length=1, max_length=100_000)] | None = None


class CampaignPage(Struct):
    items: list[Campaign]
    next_cursor: str | None


class CampaignDevicePage(Struct):
    items: list[CampaignDevice]
    next_cursor: str | None


def _choice(kind, value: str | None, field: str):
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise ValidationFailed(f"invalid {field}", [FieldError(
            field, f"one of {', '.join(k.value for k in kind)}")]) from None


def _request(data: CampaignCreate) -> CampaignRequest:
    settings = CampaignSettings(**{name: getattr(data, name) for name in CampaignSettings.__struct_fields__})
    return CampaignRequest(data.image_id, to_target(data.target), settings, data.name, data.start_at)


def _selected(data: DeviceSelection | None) -> list[UUID] | None:
    return data.device_ids if data is not None else None


class CampaignController(Controller):
    path = "/api/v1/firmware/campaigns"
    tags = ["firmware"]

    @post("/", summary="Create a campaign (a draft): who takes part, who is skipped and why, the waves",
          responses=problems(403, 404, 409, 422))
    async def create(self, data: CampaignCreate, principal: Principal, campaign_service: CampaignService) -> Campaign:
        return await campaign_service.create(principal, _request(data))

    @get("/", summary="Campaigns, newest first, with cursor pagination", responses=problems(422))
    async def list_campaigns(self, principal: Principal, campaign_service: CampaignService,
                             status: StatusFilter = None, cursor: Q = None,
                             limit: Limit = 50) -> CampaignPage:
        page = await campaign_service.list(principal, status=_choice(CampaignStatus, status, "status"),
                                           cursor=cursor, limit=limit)
        return CampaignPage(page.items, page.next_cursor)

    @get("/{campaign_id:uuid}", summary="Status, devices per state and wave, expected finish")
    async def get_campaign(self, campaign_id: UUID, principal: Principal,
                           campaign_service: CampaignService) -> Campaign:
        return await campaign_service.get(principal, campaign_id)

    @delete("/{campaign_id:uuid}", summary="Delete a draft", responses=problems(403, 409))
    async def delete_campaign(self, campaign_id: UUID, principal: Principal,
                              campaign_service: CampaignService) -> None:
        await campaign_service.delete(principal, campaign_id)

    @post("/{campaign_id:uuid}/start", status_code=200, responses=problems(403, 409, 422),
          summary="Start a draft: running, scheduled (start_at ahead) or awaiting a second admin's approval")
    async def start(self, campaign_id: UUID, principal: Principal, campaign_service: CampaignService) -> Campaign:
        return await campaign_service.start(principal, campaign_id)

    @post("/{campaign_id:uuid}/approve", status_code=200, responses=problems(403, 409, 422),
          summary="Approve a campaign awaiting approval (an admin other than its creator and starter)")
    async def approve(self, campaign_id: UUID, principal: Principal, campaign_service: CampaignService) -> Campaign:
        return await campaign_service.approve(principal, campaign_id)

    @post("/{campaign_id:uuid}/pause", status_code=200, responses=problems(403, 409),
          summary="Pause a running campaign: nothing new starts; what is under way goes on")
    async def pause(self, campaign_id: UUID, principal: Principal, campaign_service: CampaignService) -> Campaign:
        return await campaign_service.pause(principal, campaign_id)

    @post("/{campaign_id:uuid}/resume", status_code=200, responses=problems(403, 409),
          summary="Resume a paused campaign; the error threshold counts from here")
    async def resume(self, campaign_id: UUID, principal: Principal, campaign_service: CampaignService) -> Campaign:
        return await campaign_service.resume(principal, campaign_id)

    @post("/{campaign_id:uuid}/abort", status_code=200, responses=problems(403, 409),
          summary="Abort: no new downloads or installs; devices mid-install finish")
    async def abort(self, campaign_id: UUID, principal: Principal, campaign_service: CampaignService) -> Campaign:
        return await campaign_service.abort(principal, campaign_id)

    @post("/{campaign_id:uuid}/retry", status_code=200, responses=problems(403, 409, 422),
          summary="Retry failed devices (all, or those named); a completed campaign runs again")
    async def retry(self, campaign_id: UUID, principal: Principal, campaign_service: CampaignService,
                    data: DeviceSelection | None = None) -> Campaign:
        return await campaign_service.retry(principal, campaign_id, _selected(data))

    @post("/{campaign_id:uuid}/cancel", status_code=200, responses=problems(403, 409, 422),
          summary="Cancel devices still pending or waiting (all, or those named)")
    async def cancel(self, campaign_id: UUID, principal: Principal, campaign_service: CampaignService,
                     data: DeviceSelection | None = None) -> Campaign:
        return await campaign_service.cancel(principal, campaign_id, _selected(data))

    @get("/{campaign_id:uuid}/devices", summary="The campaign's devices by wave, with their state and reason",
         responses=problems(422))
    async def devices(self, campaign_id: UUID, principal: Principal, campaign_service: CampaignService,
                      device_state: StateFilter = None,
                      wave: Wave = None,
                      cursor: Q = None, limit: Limit = 100) -> CampaignDevicePage:
        page = await campaign_service.devices(principal, campaign_id, state=_choice(DeviceState, device_state, "state"),
                                              wave=wave, cursor=cursor, limit=limit)
        return CampaignDevicePage(page.items, page.next_cursor)

    @get("/{campaign_id:uuid}/devices/{device_id:uuid}", summary="One device's state and timeline, oldest first")
    async def device(self, campaign_id: UUID, device_id: UUID, principal: Principal,
                     campaign_service: CampaignService) -> CampaignDeviceTimeline:
        return await campaign_service.device(principal, campaign_id, device_id)


class MaintenanceWindowController(Controller):
    path = "/api/v1/firmware/windows"
    tags = ["firmware"]

    @post("/", summary="Add a maintenance window (local time) for the city, or for a group",
          responses=problems(403, 422))
    async def create(self, data: WindowCreate, principal: Principal,
                     window_service: MaintenanceWindowService) -> MaintenanceWindow:
        return window_out(await window_service.create(principal, data))

    @get("/", summary="The city's maintenance windows (a group's, with group_id)")
    async def list_windows(self, principal: Principal, window_service: MaintenanceWindowService,
                           group_id: Annotated[UUID | None, Parameter(required=False)] = None) -> list[MaintenanceWindow]:
        return [window_out(w) for w in await window_service.list(principal, group_id)]

    @delete("/{window_id:uuid}", summary="Remove a maintenance window", responses=problems(403))
    async def delete_window(self, window_id: UUID, principal: Principal,
                            window_service: MaintenanceWindowService) -> None:
        await window_service.delete(principal, window_id)
