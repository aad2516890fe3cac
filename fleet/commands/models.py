"""Commands, the batches that group them, their states and the targets they address."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from msgspec import Meta, Struct

from fleet.registry.models import DeviceFilter

DEFAULT_EXPIRY = timedelta(hours=1)
MAX_EXPIRY = timedelta(days=7)
MAX_ATTEMPTS = 5
MAX_TARGET_DEVICES = 100_000


class Operation(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"
    OBSERVE = "observe"
    CANCEL_OBSERVE = "cancel_observe"
    WRITE_ATTRIBUTES = "write_attributes"
    DISCOVER = "discover"
    # Block1 writes of an image to /5/0/0 (value: {"image_id": ...}); only firmware campaigns
    # create it, never a REST caller.
    PUSH_FIRMWARE = "push_firmware"


MAX_PERIOD_S = 30 * 86_400

# Seconds between notifications: LwM2M's pmin and pmax are whole seconds.
Period = Annotated[int, Meta(ge=0, le=MAX_PERIOD_S)]


class NotificationAttributes(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """When a device notifies an observation (TS §5.1.2), set on a path by Write-Attributes.

    Thresholds `gt` and `lt` may be negative (a road-ice warning below -2 °C); the step `st`
    and the periods may not.
    """

    pmin: Period | None = None
    pmax: Period | None = None
    gt: float | None = None
    lt: float | None = None
    st: Annotated[float, Meta(ge=0)] | None = None

    def rule_violations(self) -> list[str]:
        """The rules between attributes (TS §5.1.2), which a JSON schema can't say: checked as
        domain rules (422), not as malformed input."""
        broken = []
        if all(getattr(self, name) is None for name in self.__struct_fields__):
            broken.append("give at least one of pmin, pmax, gt, lt, st")
        if self.pmin is not None and self.pmax is not None and self.pmin > self.pmax:
            broken.append("pmin must not exceed pmax")
        # lt < gt, and lt + 2 * st < gt when a step is given too.
        if self.gt is not None and self.lt is not None and not self.lt + 2 * (self.st or 0) < self.gt:
            broken.append("lt (plus twice st) must stay below gt")
        return broken


class CommandStatus(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    # Never sent: the device's registration shows it lacks the path (fleet/commands/hosting.py).
    SKIPPED = "skipped"


FINAL_STATUSES = (CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.EXPIRED,
                  CommandStatus.CANCELLED, CommandStatus.SKIPPED)


@dataclass(frozen=True, slots=True)
class Target:
    """Exactly one of: listed devices, a group, or a filter over the registry."""

    device_ids: tuple[UUID, ...] = ()
    group_id: UUID | None = None
    filter: DeviceFilter | None = None


@dataclass(frozen=True, slots=True)
class CommandRequest:
    target: Target
    operation: Operation
    path: str
    value: Any = None
    expires_in: timedelta = DEFAULT_EXPIRY
    origin: str = "api"
    attributes: NotificationAttributes | None = None  # write_attributes only


@dataclass(frozen=True, slots=True)
class DeviceCommand:
    """One device's share of a batch: what the dispatcher sends and tracks."""

    id: UUID
    batch_id: UUID
    tenant_id: UUID
    device_id: UUID
    operation: Operation
    path: str
    value: Any
    status: CommandStatus
    attempts: int
    expires_at: datetime
    result: Any = None
    error: str | None = None
    created_at: datetime | None = None
    sent_at: datetime | None = None
    completed_at: datetime | None = None
    # Queued only, as listed: why it is not sent yet (WaitingReason), and when a command
    # backing off is tried again.
    waiting_reason: str | None = None
    next_attempt_at: datetime | None = None


class WaitingReason(enum.StrEnum):
    """Why a queued command waits, in the order the dispatcher's claim would be held up."""

    BACKING_OFF = "backing_off"            # its last try failed; tried again at next_attempt_at
    NOT_REGISTERED = "not_registered"      # the device is off the network: sent when it registers
    QUEUE_MODE = "queue_mode"              # the device sleeps: sent when it next updates
    BEHIND_ANOTHER = "behind_another"      # the device's earlier command goes first (one in flight)
    DUE = "due"                            # nothing: the dispatcher sends it next


@dataclass(frozen=True, slots=True)
class RequestedCommand:
    """A command in its device's history, with what made its batch: `origin` ('api', or the
    job: 'lighting', ...) and the API key that asked, when one did."""

    command: DeviceCommand
    origin: str
    requested_by: UUID | None


@dataclass(frozen=True, slots=True)
class Batch:
    id: UUID
    operation: Operation
    path: str
    value: Any
    target: dict[str, Any]
    device_count: int
    origin: str
    created_at: datetime
    expires_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    commands: list[DeviceCommand] = field(default_factory=list)
    created_by: UUID | None = None  # the API key that asked, when one did


@dataclass(frozen=True, slots=True)
class CommandQuery:
    """What GET /api/v1/commands filters by; each None: no filter. A status or device picks the
    commands (batches) with at least one device's command in that status, or for that device."""

    statuses: list[str] | None = None
    operations: list[str] | None = None
    origins: list[str] | None = None
    device_id: UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened when the dispatcher tried a command."""

    command_id: UUID
    succeeded: bool
    result: Any = None
    error: str | None = None
    # False when the failure is final (4.xx from the device): no point retrying.
    retryable: bool = True
    # A written value, as a telemetry point (tenant_id, device_id, time, path, v_num, v_text,
    # v_bool): the resource's state now, committed with the outcome.
    state: tuple | None = None
