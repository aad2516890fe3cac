"""What the rollout does next with one device, and with a campaign, from what it knows (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from fleet.campaigns.models import (DELIVERY_METHODS, Delivery, DeviceState, FailureReason, FirmwareState,
                                    Thresholds, Timeouts, reason_for_result)

# How often Fleet reads /5/0/3 and /5/0/5 of a device that does not notify them.
POLL_S = 10
# An observed device quiet this long is read as well: notifications get lost, and an observation
# lives in the memory of the node that made it, so it ends silently when that node restarts.
QUIET_S = 30
# Sub-steps of `downloading` and `installing` (firmware_campaign_devices.step).
OBSERVE, READ, DELIVER, EXECUTE = "observe", "read", "deliver", "execute"
# Command statuses after which nothing more happens to it.
_GONE = ("failed", "expired", "cancelled")


@dataclass(frozen=True, slots=True)
class Reading:
    value: float | str | None
    at: datetime  # when Fleet stored it (device_state.updated_at)


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """One device's part in a campaign and what the device and its commands said since."""

    device_id: UUID
    state: DeviceState
    state_since: datetime
    step: str | None = None
    step_at: datetime | None = None
    previous_version: str | None = None
    observing: bool | None = None
    install_sent_at: datetime | None = None
    returned_at: datetime | None = None
    next_check_at: datetime | None = None
    command_status: str | None = None
    command_error: str | None = None
    command_sent_at: datetime | None = None  # when the step under way went out to the device
    queue_mode: bool = False  # registered with binding UQ: told only when it wakes
    # The latest /5/0/9, /5/0/3, /5/0/5 and /3/0/3, by path.
    readings: Mapping[str, Reading] = field(default_factory=dict)
    last_report_at: datetime | None = None  # anything the device reported
    registered_at: datetime | None = None
    registration_updated_at: datetime | None = None
    registration_expires_at: datetime | None = None
    firmware_version: str | None = None     # devices.firmware_version
    firmware_at: datetime | None = None     # devices.updated_at
    critical_alarm_at: datetime | None = None  # the latest critical alarm's first_seen


@dataclass(frozen=True, slots=True)
class Fail:
    reason: FailureReason
    detail: str


@dataclass(frozen=True, slots=True)
class Advance:
    state: DeviceState


@dataclass(frozen=True, slots=True)
class NextStep:
    """Within `downloading`: read object 5 instead (the device does not observe), or deliver."""

    step: str
    observing: bool
    delivery: Delivery | None = None


@dataclass(frozen=True, slots=True)
class Poll:
    """Read /5/0/3 and /5/0/5 again: the device does not notify them."""


Decision = Fail | Advance | NextStep | Poll | None


def refused(error: str | None) -> bool:
    """Whether a command failed because the device answered 4.xx (it understood and said no)."""
    return bool(error) and (error.startswith("device answered 4.") or "does not support" in error)


def delivery_from(reading: Reading | None) -> Delivery:
    """/5/0/9; a device without it (LwM2M 1.0) is told a Package URI, the method every device
    with object 5 must offer in 1.0."""
    if reading is None or reading.value is None:
        return Delivery.PULL
    try:
        return DELIVERY_METHODS.get(int(float(reading.value)), Delivery.PULL)
    except ValueError:
        return Delivery.PULL


def _fresh(facts: DeviceFacts, path: str, since: datetime | None) -> Reading | None:
    reading = facts.readings.get(path)
    if reading is None or since is None or reading.at <= since:
        return None
    return reading


def _result_failure(facts: DeviceFacts, since: datetime | None) -> Fail | None:
    reading = _fresh(facts, "/5/0/5", since)
    if reading is None or reading.value is None:
        return None
    code = int(float(reading.value))
    reason = reason_for_result(code)
    return Fail(reason, f"Update Result {code}") if reason is not None else None


def _poll_due(facts: DeviceFacts, now: datetime) -> bool:
    if facts.next_check_at is not None and facts.next_check_at > now:
        return False
    if facts.observing is False:
        return True
    heard = [r.at for path in ("/5/0/3", "/5/0/5") if (r := facts.readings.get(path)) is not None]
    last = max([*heard, facts.step_at or facts.state_since])
    return now - last >= timedelta(seconds=QUIET_S)


def decide(facts: DeviceFacts, *, target_version: str, timeouts: Timeouts, health_period_s: int,
           now: datetime) -> Decision:
    """The next move of a device downloading, installing or verifying; None: wait."""
    if facts.state is DeviceState.DOWNLOADING:
        return _downloading(facts, timeouts, now)
    if facts.state is DeviceState.INSTALLING:
        return _installing(facts, target_version, timeouts, now)
    if facts.state is DeviceState.VERIFYING:
        return _verifying(facts, health_period_s, now)
    return None


def _downloading(facts: DeviceFacts, timeouts: Timeouts, now: datetime) -> Decision:
    if now - facts.state_since > timedelta(seconds=timeouts.download_s):
        return Fail(FailureReason.TIMED_OUT, f"no download finished within {timeouts.download_s} s")
    status, error = facts.command_status, facts.command_error
    if facts.step == OBSERVE:
        if status == "succeeded":
            return NextStep(DELIVER, True, delivery_from(_fresh(facts, "/5/0/9", facts.step_at)))
        if status in _GONE:
            return NextStep(READ, False)
        return None
    if facts.step == READ:
        if status == "succeeded":
            return NextStep(DELIVER, False, delivery_from(_fresh(facts, "/5/0/9", facts.step_at)))
        if status in _GONE:
            if refused(error):
                return Fail(FailureReason.DEVICE_REFUSED, error or "")
            return Fail(FailureReason.DOWNLOAD_FAILED, f"could not read /5/0: {error or status}")
        return None
    failure = _result_failure(facts, facts.step_at)
    if failure is not None:
        return failure
    state = _fresh(facts, "/5/0/3", facts.step_at)
    if state is not None and state.value is not None and int(float(state.value)) == FirmwareState.DOWNLOADED:
        return Advance(DeviceState.DOWNLOADED)
    if status in _GONE:
        if refused(error):
            return Fail(FailureReason.DEVICE_REFUSED, error or "")
        return Fail(FailureReason.DOWNLOAD_FAILED, error or f"the download step was {status}")
    return Poll() if _poll_due(facts, now) else None


def returned_version(facts: DeviceFacts) -> str | None:
    """The version the device reported after registering again since the Update, if it did."""
    sent = facts.install_sent_at
    if sent is None or facts.registered_at is None or facts.registered_at <= sent:
        return None
    reading = _fresh(facts, "/3/0/3", sent)
    if reading is not None and reading.value is not None:
        return str(reading.value)
    if facts.firmware_at is not None and facts.firmware_at > sent:
        return facts.firmware_version
    return None


def _installing(facts: DeviceFacts, target_version: str, timeouts: Timeouts, now: datetime) -> Decision:
    if facts.command_status in _GONE and refused(facts.command_error):
        return Fail(FailureReason.INSTALL_FAILED, facts.command_error or "")
    failure = _result_failure(facts, facts.install_sent_at)
    if failure is not None:
        return failure
    version = returned_version(facts)
    if version is not None:
        if version == target_version:
            return Advance(DeviceState.VERIFYING)
        if version == facts.previous_version:
            return Fail(FailureReason.ROLLED_BACK, f"came back on {version}")
        return Fail(FailureReason.INSTALL_FAILED, f"came back on {version}, not {target_version}")
    if facts.queue_mode and facts.command_status == "queued":
        # A sleeping device gets its Update when it next wakes (the Update's expiry bounds that
        # wait); its install time starts once the Update went out.
        return None
    sent = facts.command_sent_at or facts.install_sent_at or facts.state_since
    if now - sent > timedelta(seconds=timeouts.install_s):
        detail = f"did not come back on the new version within {timeouts.install_s} s"
        if facts.command_status in ("queued", "expired", "cancelled"):
            detail += " (the Update never reached it)"
        return Fail(FailureReason.NEVER_CAME_BACK, detail)
    return Poll() if _poll_due(facts, now) else None


def health_problems(facts: DeviceFacts, now: datetime) -> list[str]:
    """What keeps a device back on the new version from counting as a success."""
    since = facts.returned_at or facts.state_since
    problems = []
    if facts.registration_expires_at is None or facts.registration_expires_at <= now:
        problems.append("not registered")
    reported = [t for t in (facts.last_report_at, facts.registration_updated_at) if t is not None]
    if not any(t > since for t in reported):
        problems.append("reported nothing since it came back")
    if facts.critical_alarm_at is not None and facts.critical_alarm_at > since:
        problems.append("a critical alarm since it came back")
    return problems


def _verifying(facts: DeviceFacts, health_period_s: int, now: datetime) -> Decision:
    if health_period_s == 0:
        return Advance(DeviceState.SUCCEEDED)
    since = facts.returned_at or facts.state_since
    if now - since < timedelta(seconds=health_period_s):
        return None
    problems = health_problems(facts, now)
    if problems:
        return Fail(FailureReason.UNHEALTHY, "; ".join(problems))
    return Advance(DeviceState.SUCCEEDED)


# -- the campaign -----------------------------------------------------------------------------------

def wave_done(size: int, succeeded: int, success_percent: float) -> bool:
    """Whether a wave reached its success threshold (an empty wave has nothing to wait for)."""
    return size == 0 or succeeded * 100 >= success_percent * size


def error_verdict(succeeded: int, failed: int, baseline_succeeded: int, baseline_failed: int,
                  thresholds: Thresholds) -> str | None:
    """Why the campaign stops by itself, or None: counted since it was last resumed."""
    failures = failed - baseline_failed
    ended = succeeded - baseline_succeeded + failures
    if ended < thresholds.error_min_count or ended <= 0:
        return None
    share = failures * 100 / ended
    if share < thresholds.error_percent:
        return None
    return (f"error threshold: {failures} of {ended} ended devices failed "
            f"({share:.3g} % >= {thresholds.error_percent:g} %)")
