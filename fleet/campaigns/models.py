"""Campaigns and their settings, each device's states on the way to a new version, and the
named reasons a device fails or is left out."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from fleet.commands.models import Target


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    AWAITING_APPROVAL = "awaiting_approval"  # started, waiting for a second admin
    SCHEDULED = "scheduled"                  # approved or started, waiting for start_at
    RUNNING = "running"
    PAUSED = "paused"                        # by an operator, or by the error threshold
    COMPLETED = "completed"                  # every device ended (succeeded, failed, cancelled)
    ABORTED = "aborted"                      # no new downloads or installs; those mid-install finish


# Campaigns whose devices hold their one active campaign and that the rollout looks at.
LIVE_STATUSES = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED,
                 CampaignStatus.ABORTED)


class DeviceState(enum.StrEnum):
    PENDING = "pending"          # in a wave that has not started
    WAITING = "waiting"          # its wave started: waits for a download slot or for the device
    DOWNLOADING = "downloading"  # Package URI written (pull) or blocks being pushed
    DOWNLOADED = "downloaded"    # /5/0/3 = 2: waits for a maintenance window to install
    INSTALLING = "installing"    # Update (/5/0/2) executed: the device reboots
    VERIFYING = "verifying"      # back on the target version: the health period runs
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"          # never took part (incompatible, already on the version, ...)


FINAL_STATES = (DeviceState.SUCCEEDED, DeviceState.FAILED, DeviceState.CANCELLED, DeviceState.SKIPPED)
# Devices an abort stops: nothing reached them yet, or only the package did. Those installing or
# verifying finish, since cutting an install short could brick a lamp.
STOPPED_BY_ABORT = (DeviceState.PENDING, DeviceState.WAITING, DeviceState.DOWNLOADING, DeviceState.DOWNLOADED)
# States in which the device holds a download slot (the campaign's concurrency limit).
DOWNLOAD_STATES = (DeviceState.DOWNLOADING,)


class FailureReason(enum.StrEnum):
    DOWNLOAD_FAILED = "download_failed"
    INTEGRITY = "integrity"
    UNSUPPORTED_PACKAGE = "unsupported_package"
    OUT_OF_STORAGE = "out_of_storage"
    OUT_OF_MEMORY = "out_of_memory"
    INVALID_URI = "invalid_uri"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    INSTALL_FAILED = "install_failed"
    ROLLED_BACK = "rolled_back"          # came back on the old version
    NEVER_CAME_BACK = "never_came_back"  # no registration on the new version in time
    UNHEALTHY = "unhealthy"              # back on the new version, then offline, silent or alarming
    TIMED_OUT = "timed_out"              # a step took longer than the campaign allows
    DEVICE_REFUSED = "device_refused"    # the device answered 4.xx to a step (no object 5, ...)


class SkipReason(enum.StrEnum):
    INCOMPATIBLE = "incompatible"            # model or manufacturer not among the image's
    ALREADY_ON_VERSION = "already_on_version"
    DECOMMISSIONED = "decommissioned"


class FirmwareState(enum.IntEnum):
    """/5/0/3 State (OMA object 5)."""

    IDLE = 0
    DOWNLOADING = 1
    DOWNLOADED = 2
    UPDATING = 3


# /5/0/5 Update Result: every code a device may report, mapped to the failure it means
# (None: not a failure).
UPDATE_RESULT_REASONS: dict[int, FailureReason | None] = {
    0: None,                                   # initial value
    1: None,                                   # firmware updated successfully
    2: FailureReason.OUT_OF_STORAGE,           # not enough flash memory for the new package
    3: FailureReason.OUT_OF_MEMORY,            # out of RAM during download
    4: FailureReason.DOWNLOAD_FAILED,          # connection lost during download
    5: FailureReason.INTEGRITY,                # integrity check failure
    6: FailureReason.UNSUPPORTED_PACKAGE,      # unsupported package type
    7: FailureReason.INVALID_URI,              # invalid URI
    8: FailureReason.INSTALL_FAILED,           # firmware update failed
    9: FailureReason.UNSUPPORTED_PROTOCOL,     # unsupported protocol
}


def reason_for_result(code: int) -> FailureReason | None:
    """The failure an Update Result code means; an unknown code (a newer spec, a vendor's) is a
    failed install rather than silence."""
    return UPDATE_RESULT_REASONS.get(code, FailureReason.INSTALL_FAILED)


class Delivery(enum.StrEnum):
    PULL = "pull"  # the device downloads from the Package URI (/5/0/1) with Block2
    PUSH = "push"  # Fleet writes the package (/5/0/0) with Block1


# /5/0/9 Firmware Update Delivery Method: 0 pull only, 1 push only, 2 both (pull preferred:
# the device paces its own download, and any node serves it).
DELIVERY_METHODS: dict[int, Delivery] = {0: Delivery.PULL, 1: Delivery.PUSH, 2: Delivery.PULL}


# -- what the control room gives ---------------------------------------------------------------

Percent = Annotated[float, msgspec.Meta(gt=0, le=100)]
LocalTime = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class Waves(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A canary wave (a count or a percentage of the participating devices), then waves that
    grow by a factor or have a fixed size; the last wave takes whatever is left."""

    canary: Annotated[int, msgspec.Meta(ge=1)] | None = None
    canary_percent: Percent | None = None
    growth: Annotated[float, msgspec.Meta(ge=1, le=100)] | None = None
    size: Annotated[int, msgspec.Meta(ge=1)] | None = None

    def rule_violations(self) -> list[str]:
        broken = []
        if (self.canary is None) == (self.canary_percent is None):
            broken.append("give exactly one of waves.canary and waves.canary_percent")
        if (self.growth is None) == (self.size is None):
            broken.append("give exactly one of waves.growth and waves.size")
        return broken


class Thresholds(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # A wave starts once this share of the wave before it succeeded.
    success_percent: Percent = 95.0
    # Once `error_min_count` devices ended (since the last resume), this share failed stops the
    # campaign by itself: `on_error` says whether it pauses or aborts.
    error_percent: Percent = 10.0
    error_min_count: Annotated[int, msgspec.Meta(ge=1)] = 5
    on_error: Literal["pause", "abort"] = "pause"


class Window(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A campaign's own maintenance window (local time); unset, each device's windows apply."""

    start: LocalTime
    end: LocalTime


class Timeouts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    download_s: Annotated[int, msgspec.Meta(ge=10, le=7 * 86_400)] = 6 * 3600
    # From Update executed to the device registering again on any version.
    install_s: Annotated[int, msgspec.Meta(ge=10, le=86_400)] = 1800
    # A Package URI's token works this long after it is written.
    token_s: Annotated[int, msgspec.Meta(ge=60, le=7 * 86_400)] = 24 * 3600


class CampaignSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything about a campaign but its image and target; stored as given, with defaults."""

    waves: Waves = msgspec.field(default_factory=lambda: Waves(canary_percent=1.0, growth=4.0))
    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)
    window: Window | None = None
    # Downloads too only inside windows (the radio network's quiet hours); installs always are.
    restrict_downloads: bool = False
    # Devices downloading at once, per campaign: protects the radio network.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100
    health_period_s: Annotated[int, msgspec.Meta(ge=0, le=7 * 86_400)] = 600
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)


@dataclass(frozen=True, slots=True)
class CampaignRequest:
    """A new campaign, as the adapter decoded it (the body's target as commands take it)."""

    image_id: UUID
    target: Target
    settings: CampaignSettings
    name: str = ""
    start_at: datetime | None = None  # a scheduled start; None starts when started


class WindowCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /api/v1/firmware/windows: a city's window, or a group's with `group_id`."""

    start: LocalTime
    end: LocalTime
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    group_id: UUID | None = None
    # ISO weekdays, 1 = Monday (a Literal, so the API document lists them too).
    weekdays: Annotated[list[Literal[1, 2, 3, 4, 5, 6, 7]], msgspec.Meta(min_length=1)] = \
        msgspec.field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])


# -- what Fleet shows -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    id: UUID
    group_id: UUID | None
    name: str
    starts: time
    ends: time
    weekdays: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Campaign:
    id: UUID
    name: str
    image_id: UUID
    status: CampaignStatus
    status_reason: str | None
    target: dict
    settings: CampaignSettings
    device_count: int
    wave_count: int
    current_wave: int
    start_at: datetime | None
    created_by: UUID | None
    created_at: datetime
    approved_by: UUID | None
    approved_at: datetime | None
    started_at: datetime | None
    paused_at: datetime | None
    finished_at: datetime | None
    version: int
    updated_at: datetime
    # Devices per state (every DeviceState, zeros included), and per wave and state.
    counts: dict[str, int] = field(default_factory=dict)
    waves: list[dict] = field(default_factory=list)
    expected_finish: datetime | None = None
    image_version: str | None = None
    started_by: UUID | None = None


@dataclass(frozen=True, slots=True)
class CampaignDevice:
    device_id: UUID
    wave: int
    state: DeviceState
    reason: str | None
    detail: str | None
    delivery: Delivery | None
    previous_version: str | None
    attempt: int
    state_since: datetime
    endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One entry of a device's timeline in a campaign."""

    at: datetime
    state: DeviceState
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class CampaignDeviceTimeline:
    """One device's part in a campaign with every state it passed through, oldest first."""

    device: CampaignDevice
    timeline: list[Step]
