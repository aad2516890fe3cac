"""/api/v1/alarms: the city's alarms, their counts, acknowledging, shelving, clearing and settings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.params import Parameter
from msgspec import Struct

from api.problems import problems
from api.schemas import DeviceKindName, KindFilter, query_enum
from fleet.access.models import Principal
from fleet.alarms.models import Acknowledge, Alarm as AlarmModel, AlarmType, DeviceShelve, ManualClear, Shelve, Shelving
from fleet.alarms.merging import alarm_payload
from fleet.alarms.service import AlarmService, SettingsView
from fleet.alarms.settings import AlarmSettings

SeverityName = Literal["critical", "major", "minor", "warning"]
AlarmStatusName = Literal["active", "acknowledged", "cleared"]
Q = Annotated[str | None, Parameter(required=False)]
Limit = Annotated[int, Parameter(ge=1, le=1000)]


class Alarm(Struct, omit_defaults=True):
    id: UUID
    type: str
    severity: SeverityName
    status: AlarmStatusName
    device_id: UUID
    count: Annotated[int, msgspec.Meta(description="occurrences: presence after a period of absence")]
    first_seen: datetime
    last_seen: datetime
    kind: DeviceKindName | None
    district: str | None
    lat: float | None
    lon: float | None
    value: Any
    detail: str
    source: Literal["device", "citizen", "operator"]
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledge_note: str | None
    cleared_at: datetime | None
    cleared_by: str | None
    clear_reason: Literal["condition", "manual", "work_order", "decommissioned"] | None
    verified_at: datetime | None
    shelved_until: Annotated[datetime | None, msgspec.Meta(description="silenced until then (alarm or device)")]
    version: int
    created_at: datetime
    updated_at: datetime
    distance_m: Annotated[int, msgspec.Meta(description="whole metres from `near`")] | None = None


class AlarmPage(Struct):
    items: list[Alarm]
    next_cursor: str | None


class AlarmCounts(Struct):
    total: int
    by_severity: dict[str, int]
    by_district: Annotated[dict[str, int], msgspec.Meta(description='"" counts devices with no district')]
    by_type: dict[str, int]


class AlarmShelving(Struct):
    id: UUID
    device_id: UUID | None
    alarm_id: UUID | None
    until: datetime
    reason: str
    created_by: str
    created_at: datetime


class AlarmSettingsView(Struct, omit_defaults=True):
    effective: AlarmSettings
    defaults: AlarmSettings
    overrides: Annotated[dict[str, Any], msgspec.Meta(description="what is stored: only what differs")]
    city_overrides: dict[str, Any] | None = None


def alarm_out(alarm: AlarmModel) -> Alarm:
    return msgspec.convert(alarm_payload(alarm), Alarm)


def settings_out(view: SettingsView) -> AlarmSettingsView:
    return AlarmSettingsView(view.effective, view.defaults, view.overrides, view.city_overrides)


def shelving_out(shelving: Shelving) -> AlarmShelving:
    return AlarmShelving(shelving.id, shelving.device_id, shelving.alarm_id, shelving.until, shelving.reason,
                         shelving.created_by, shelving.created_at)


StatusQuery = Annotated[str | None, Parameter(
    required=False, description="open (default: active and acknowledged), active, acknowledged, cleared, all",
    schema_extra={"enum": ["", "open", "active", "acknowledged", "cleared", "all"]})]


TypeQuery = Annotated[str | None, Parameter(required=False, schema_extra={"enum": ["", *(t.value for t in AlarmType)]})]


def _filters(status, severity, type_, kind, district, device, group, bbox, near, radius_m, shelved) -> dict:
    return {"status": status, "severity": severity, "type": type_, "kind": kind, "district": district,
            "device": device, "group_id": group, "bbox": bbox, "near": near, "radius_m": radius_m,
            "shelved": shelved}


class AlarmController(Controller):
    path = "/api/v1/alarms"
    tags = ["alarms"]

    @get("/", summary="List alarms with filters; newest first, or nearest first with `near`",
         responses=problems(404, 422))
    async def list_alarms(
        self, principal: Principal, alarm_service: AlarmService,
        status: StatusQuery = None, severity: query_enum(SeverityName) = None, type: TypeQuery = None,  # noqa: A002
        kind: KindFilter = None, district: Q = None, device: Q = None, group: Q = None,
        bbox: Annotated[str | None, Parameter(description="min_lon,min_lat,max_lon,max_lat")] = None,
        near: Annotated[str | None, Parameter(description="lat,lon: nearest first, with distance_m")] = None,
        radius_m: Annotated[str | None, Parameter(description="metres around `near` (default 500)")] = None,
        shelved: query_enum(Literal["true", "false"]) = None, cursor: Q = None, limit: Limit = 100,
    ) -> AlarmPage:
        raw = _filters(status, severity, type, kind, district, device, group, bbox, near, radius_m, shelved)
        page = await alarm_service.list(principal, raw, cursor=cursor, limit=limit)
        return AlarmPage([alarm_out(a) for a in page.items], page.next_cursor)

    @get("/counts", summary="Counts of alarms by severity, district and type (same filters)",
         responses=problems(404, 422))
    async def counts(
        self, principal: Principal, alarm_service: AlarmService,
        status: StatusQuery = None, severity: query_enum(SeverityName) = None, type: TypeQuery = None,  # noqa: A002
        kind: KindFilter = None, district: Q = None, device: Q = None, group: Q = None, bbox: Q = None,
        near: Q = None, radius_m: Q = None, shelved: query_enum(Literal["true", "false"]) = None,
    ) -> AlarmCounts:
        raw = _filters(status, severity, type, kind, district, device, group, bbox, near, radius_m, shelved)
        counts = await alarm_service.counts(principal, raw)
        return AlarmCounts(counts.total, counts.by_severity, counts.by_district, counts.by_type)

    @get("/settings", summary="The city's alarm settings: effective, defaults and stored overrides")
    async def get_settings(self, principal: Principal, alarm_service: AlarmService) -> AlarmSettingsView:
        return settings_out(await alarm_service.settings(principal))

    @put("/settings", summary="Replace the city's overrides of the default alarm settings",
         responses=problems(403, 422))
    async def put_settings(self, data: dict[str, Any], principal: Principal,
                           alarm_service: AlarmService) -> AlarmSettingsView:
        return settings_out(await alarm_service.store_settings(principal, data))

    @post("/shelves", summary="Shelve a device: silence all its alarms until a time", status_code=201,
          responses=problems(403, 404, 422))
    async def shelve_device(self, data: DeviceShelve, principal: Principal,
                            alarm_service: AlarmService) -> AlarmShelving:
        return shelving_out(await alarm_service.shelve_device(principal, data))

    @get("/{alarm_id:uuid}", summary="One alarm")
    async def get_alarm(self, alarm_id: UUID, principal: Principal, alarm_service: AlarmService) -> Alarm:
        return alarm_out(await alarm_service.get(principal, alarm_id))

    @post("/{alarm_id:uuid}/acknowledge", summary="Acknowledge an open alarm, with a note", status_code=200,
          responses=problems(403, 409))
    async def acknowledge(self, alarm_id: UUID, data: Acknowledge, principal: Principal,
                          alarm_service: AlarmService) -> Alarm:
        return alarm_out(await alarm_service.acknowledge(principal, alarm_id, data))

    @post("/{alarm_id:uuid}/shelve", summary="Silence an alarm until a time or for some minutes",
          status_code=200, responses=problems(403, 409, 422))
    async def shelve(self, alarm_id: UUID, data: Shelve, principal: Principal,
                     alarm_service: AlarmService) -> Alarm:
        return alarm_out(await alarm_service.shelve(principal, alarm_id, data))

    @post("/{alarm_id:uuid}/clear", summary="Clear by hand, where the condition cannot be observed",
          status_code=200, responses=problems(403, 409))
    async def clear(self, alarm_id: UUID, data: ManualClear, principal: Principal,
                    alarm_service: AlarmService) -> Alarm:
        return alarm_out(await alarm_service.clear(principal, alarm_id, data))


class GroupAlarmSettingsController(Controller):
    path = "/api/v1/groups/{group_id:uuid}/alarm-settings"
    tags = ["alarms"]

    @get("/", summary="A group's alarm settings: effective for its members, and its overrides",
         responses=problems(409))
    async def get_settings(self, group_id: UUID, principal: Principal,
                           alarm_service: AlarmService) -> AlarmSettingsView:
        return settings_out(await alarm_service.settings(principal, group_id))

    @put("/", summary="Replace a group's overrides of the city's alarm settings", responses=problems(403, 409, 422))
    async def put_settings(self, group_id: UUID, data: dict[str, Any], principal: Principal,
                           alarm_service: AlarmService) -> AlarmSettingsView:
        return settings_out(await alarm_service.store_settings(principal, data, group_id))

    @delete("/", summary="Drop a group's overrides (its members follow the city's settings)",
            responses=problems(403, 409))
    async def delete_settings(self, group_id: UUID, principal: Principal, alarm_service: AlarmService) -> None:
        await alarm_service.delete_group_settings(principal, group_id)
