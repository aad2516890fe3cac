"""/api/v1/commands and device observations: downlink to one device, a group or a filter."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from litestar import Controller, delete, get, post
from litestar.params import Parameter
from msgspec import Meta, Struct

from api.problems import problems
from fleet.access.models import Principal
from fleet.commands.models import (Batch, CommandQuery, CommandRequest, DeviceCommand, NotificationAttributes, Operation,
                                   RequestedCommand, Target)
from fleet.commands.service import CommandService
from fleet.errors import FieldError, ValidationFailed
from fleet.registry.filters import parse_filter


WaitingReasonName = Literal["backing_off", "not_registered", "queue_mode", "behind_another", "due"]
WAITING_DOC = ("queued only: why it is not sent yet: backing_off (its last try failed; see next_attempt_at), "
               "not_registered (sent when the device registers), queue_mode (the device sleeps: sent when it "
               "next updates), behind_another (the device's earlier command goes first), due (sent next)")


class CommandTarget(Struct, forbid_unknown_fields=True):
    __exactly_one_of__: ClassVar = ("device_ids", "group_id", "filter")

    device_ids: Annotated[list[UUID], Meta(min_length=1)] | None = None
    group_id: UUID | None = None
    filter: dict[str, Any] | None = None


class CommandCreate(Struct, forbid_unknown_fields=True):
    target: CommandTarget
    operation: Literal["read", "write", "execute", "observe", "cancel_observe", "write_attributes", "discover"]
    path: Annotated[str, Meta(max_length=40, description="LwM2M path, e.g. /3416/0/1")]
    value: Any = None
    attributes: Annotated[NotificationAttributes | None, Meta(
        description="write_attributes only: pmin, pmax (s), gt, lt, st; at least one")] = None
    expires_in_s: Annotated[int, Meta(ge=1, le=7 * 86400)] = 3600


class DeviceResult(Struct, omit_defaults=True):
    device_id: UUID
    status: str
    attempts: int
    result: Any = None
    error: str | None = None
    sent_at: datetime | None = None
    completed_at: datetime | None = None
    waiting_reason: Annotated[WaitingReasonName | None, Meta(description=WAITING_DOC)] = None
    next_attempt_at: Annotated[datetime | None, Meta(description="backing_off: when it is tried again")] = None


class CommandSummary(Struct):
    id: UUID
    operation: str
    path: str
    value: Any
    target: dict[str, Any]
    device_count: int
    counts: Annotated[dict[str, int], Meta(description="devices per state: queued, sent, succeeded, failed, "
                                                       "expired, cancelled, skipped")]
    origin: Annotated[str, Meta(description="api, or what else sent it: lighting, collection, firmware:<campaign id>")]
    requested_by: Annotated[str | None, Meta(description="key:<api key id> that asked, if a key did")]
    created_at: datetime
    expires_at: datetime


class Command(CommandSummary):
    devices: Annotated[list[DeviceResult], Meta(description="per-device results, up to `limit`")]


class DeviceCommandOut(Struct):
    id: Annotated[UUID, Meta(description="this device's command (`command_id` in command.finished events)")]
    batch_id: Annotated[UUID, Meta(description="the command as POST /api/v1/commands returned it: "
                                               "GET /api/v1/commands/{batch_id}")]
    operation: str
    path: str
    value: Any
    status: Literal["queued", "sent", "succeeded", "failed", "expired", "cancelled", "skipped"]
    attempts: int
    result: Any
    error: str | None
    created_at: datetime
    sent_at: Annotated[datetime | None, Meta(description="last sent to the device")]
    completed_at: datetime | None
    expires_at: datetime
    origin: Annotated[str, Meta(description="api, or what else sent it: lighting, collection, ...")]
    requested_by: Annotated[str | None, Meta(description="key:<api key id> that asked, if a key did")]
    waiting_reason: Annotated[WaitingReasonName | None, Meta(description=WAITING_DOC)] = None
    next_attempt_at: Annotated[datetime | None, Meta(description="backing_off: when it is tried again")] = None


class DeviceCommandPage(Struct):
    items: list[DeviceCommandOut]
    next_cursor: str | None


class ObservationCreate(Struct, forbid_unknown_fields=True):
    path: Annotated[str, Meta(max_length=40)]


def to_target(data: CommandTarget) -> Target:
    given = [name for name in ("device_ids", "group_id", "filter") if getattr(data, name) is not None]
    if len(given) != 1:
        raise ValidationFailed("invalid target", [FieldError(
            "target", "give exactly one of device_ids, group_id or filter")])
    if data.device_ids is not None:
        if not data.device_ids:
            raise ValidationFailed("invalid target", [FieldError("target.device_ids", "must not be empty")])
        return Target(device_ids=tuple(data.device_ids))
    if data.group_id is not None:
        return Target(group_id=data.group_id)
    return Target(filter=parse_filter(data.filter or {}))


def _result(c: DeviceCommand) -> DeviceResult:
    return DeviceResult(c.device_id, c.status.value, c.attempts, c.result, c.error, c.sent_at, c.completed_at,
                        c.waiting_reason, c.next_attempt_at)


def device_command_out(entry: RequestedCommand) -> DeviceCommandOut:
    c = entry.command
    return DeviceCommandOut(c.id, c.batch_id, c.operation.value, c.path, c.value, c.status.value, c.attempts,
                            c.result, c.error, c.created_at, c.sent_at, c.completed_at, c.expires_at,
                            entry.origin, f"key:{entry.requested_by}" if entry.requested_by else None,
                            c.waiting_reason, c.next_attempt_at)


def command_out(batch: Batch) -> Command:
    summary = command_summary(batch)
    return Command(**{name: getattr(summary, name) for name in summary.__struct_fields__},
                   devices=[_result(c) for c in batch.commands])


class CommandPage(Struct):
    items: list[CommandSummary]
    next_cursor: str | None


def command_summary(b: Batch) -> CommandSummary:
    return CommandSummary(b.id, b.operation.value, b.path, b.value, b.target, b.device_count, b.counts, b.origin,
                          f"key:{b.created_by}" if b.created_by else None, b.created_at, b.expires_at)


Repeated = Annotated[list[str] | None, Parameter(required=False, description="repeat, or a comma list")]


class CommandController(Controller):
    path = "/api/v1/commands"
    tags = ["commands"]

    @get("/", summary="The city's past commands, newest first, with filters and cursor pagination "
                      "(per-device results: GET /api/v1/commands/{id})", responses=problems(403, 404, 422))
    async def list_commands(
        self, principal: Principal, command_service: CommandService,
        status: Annotated[list[str] | None, Parameter(
            required=False, description="commands with a device in this state: queued, sent, succeeded, failed, "
                                        "expired, cancelled, skipped; repeat, or a comma list")] = None,
        operation: Repeated = None, origin: Repeated = None,
        device_id: Annotated[UUID | None, Parameter(required=False, description="commands that reached this device")] = None,
        since: Annotated[datetime | None, Parameter(required=False, description="created at or after")] = None,
        until: Annotated[datetime | None, Parameter(required=False, description="created before")] = None,
        cursor: Annotated[str | None, Parameter(required=False)] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> CommandPage:
        page = await command_service.list(principal, CommandQuery(status, operation, origin, device_id, since, until),
                                          cursor=cursor, limit=limit)
        return CommandPage([command_summary(b) for b in page.items], page.next_cursor)

    @post("/", status_code=202, summary="Queue a read, write, execute, observe, write_attributes or discover",
          responses=problems(403, 404, 422))
    async def submit(self, data: CommandCreate, principal: Principal,
                     command_service: CommandService) -> Command:
        batch = await command_service.submit(principal, CommandRequest(
            to_target(data.target), Operation(data.operation), data.path, data.value,
            timedelta(seconds=data.expires_in_s), attributes=data.attributes))
        return command_out(batch)

    @get("/{command_id:uuid}", summary="Per-state counts and per-device results")
    async def get_command(self, command_id: UUID, principal: Principal, command_service: CommandService,
                          limit: Annotated[int, Parameter(ge=0, le=100_000)] = 10_000) -> Command:
        return command_out(await command_service.get(principal, command_id, limit=limit))

    @post("/{command_id:uuid}/cancel", status_code=200, summary="Cancel what is still queued",
          responses=problems(403))
    async def cancel(self, command_id: UUID, principal: Principal, command_service: CommandService) -> Command:
        return command_out(await command_service.cancel(principal, command_id))


class DeviceCommandController(Controller):
    path = "/api/v1/devices/{device_id:uuid}/commands"
    tags = ["commands"]

    @get("/", summary="The device's commands, newest first, with cursor pagination",
         responses=problems(403, 404, 422))
    async def list_device_commands(
        self, device_id: UUID, principal: Principal, command_service: CommandService,
        status: Annotated[list[str] | None, Parameter(description="queued, sent, succeeded, failed, expired, "
                                                                  "cancelled, skipped: repeat, or a comma list")] = None,
        cursor: Annotated[str | None, Parameter(required=False)] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> DeviceCommandPage:
        page = await command_service.for_device(principal, device_id, statuses=status or [], cursor=cursor,
                                                limit=limit)
        return DeviceCommandPage([device_command_out(e) for e in page.items], page.next_cursor)


class ObservationController(Controller):
    path = "/api/v1/devices/{device_id:uuid}/observations"
    tags = ["commands"]

    @post("/", status_code=202, summary="Start observing a path; notifications become telemetry",
          responses=problems(403, 422))
    async def start(self, device_id: UUID, data: ObservationCreate, principal: Principal,
                    command_service: CommandService) -> Command:
        return command_out(await command_service.observe(principal, device_id, data.path, start=True))

    @delete("/", status_code=202, summary="Stop observing a path", responses=problems(403, 422))
    async def stop(self, device_id: UUID, path: str, principal: Principal,
                   command_service: CommandService) -> Command:
        return command_out(await command_service.observe(principal, device_id, path, start=False))

    @get("/", summary="Paths observed on this device")
    async def list_observations(self, device_id: UUID, principal: Principal,
                                command_service: CommandService) -> list[dict[str, Any]]:
        return await command_service.observations(principal, device_id)
