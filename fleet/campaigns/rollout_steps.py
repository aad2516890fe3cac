"""What the rollout does next with one device, and with a campaign, from what it knows (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from fleet.campaigns.models import (DELIVERY_METHODS, Delivery, DeviceState, FailureReason, FirmwareState,
                                    Thresholds, Timeouts, reason_for_result)

# How often Fleet reads /5/0/3 and /5/0/5 of a device that does not notify them.
POLL_S = 10
# A delivery the device refused is often explained by its Update Result (2: no room for the
# package), notified a moment after its 4.xx answer: waited for this long before the failure is
# named by the answer alone.
REPORT_GRACE_S = 5
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
    command_sent_at: datetime | None = None  # when a dispatcher took the step to the device
    command_completed_at: datetime | None = None
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


def reported_code(reading: Reading | None) -> int | None:
    """An integer resource (/5/0/3, /5/0/5, /5/0/9) as the device reported it, or None when it
    reported none or something that is not a whole number ("abc", true, 2.5, NaN): a device's
    odd value is ignored like a missing one, never an error that would stop its campaign's pass."""
    if reading is None or reading.value is None or isinstance(reading.value, bool):
        return None
    try:
        number = float(reading.value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or not number.is_integer():
        return None
    return int(number)


def delivery_from(reading: Reading | None) -> Delivery:
    """/5/0/9; a device without it (LwM2M 1.0) is told a Package URI, the method every device
    with object 5 must offer in 1.0."""
    return DELIVERY_METHODS.get(reported_code(reading), Delivery.PULL)


def _fresh(facts: DeviceFacts, path: str, since: datetime | None) -> Reading | None:
    reading = facts.readings.get(path)
    if reading is None or since is None or reading.at <= since:
        return None
    return reading


def _result_failure(facts: DeviceFacts, since: datetime | None) -> Fail | None:
    code = reported_code(_fresh(facts, "/5/0/5", since))
    if code is None:
        return None
    reason = reason_for_result(code)
    return Fail(reason, f"Update Result {code}") if reason is not None else None


def _result_pending(facts: DeviceFacts, now: datetime) -> bool:
    """Whether the Update Result of a device that has just registered again may still come."""
    registered = facts.registered_at
    return (registered is not None and _fresh(facts, "/5/0/5", registered) is None
            and now - registered < timedelta(seconds=REPORT_GRACE_S))


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
    # Only what the device reported once its package was on the way counts: a notification sent
    # before the Package URI or the push reached it still carries the last attempt's result.
    sent = facts.command_sent_at
    failure = _result_failure(facts, sent)
    if failure is not None:
        return failure
    if reported_code(_fresh(facts, "/5/0/3", sent)) == FirmwareState.DOWNLOADED:
        return Advance(DeviceState.DOWNLOADED)
    if status in _GONE:
        answered = facts.command_completed_at
        if answered is not None and now - answered < timedelta(seconds=REPORT_GRACE_S):
            return None
        if refused(error):
            return Fail(FailureReason.DEVICE_REFUSED, error or "")
        return Fail(FailureReason.DOWNLOAD_FAILED, error or f"the download step was {status}")
    return Poll() if _poll_due(facts, now) else None


def update_sent_at(facts: DeviceFacts) -> datetime | None:
    """When the Update (Execute /5/0/2) went to the device, None while it has not. A sleeping
    device gets it only when it wakes, maybe registering first on its old version: that must
    not count as coming back."""
    return facts.command_sent_at if facts.step == EXECUTE else facts.install_sent_at


def returned_version(facts: DeviceFacts) -> str | None:
    """The version the device reported after registering again since the Update, if it did."""
    sent = update_sent_at(facts)
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
        if _result_pending(facts, now):
            # Back on another version: its Update Result (8: the install failed; 1: it believes
            # it succeeded, so it rolled back) is read or notified just after the registration.
            return Poll() if _poll_due(facts, now) else None
        if version == facts.previous_version:
            return Fail(FailureReason.ROLLED_BACK, f"came back on {version}")
        return Fail(FailureReason.INSTALL_FAILED, f"came back on {version}, not {target_version}")
    queued_at = facts.install_sent_at or facts.state_since
    registered = facts.registration_expires_at is not None and facts.registration_expires_at > now
    if facts.step == EXECUTE and facts.command_status == "expired" and facts.command_sent_at is None:
        if not registered:
            return Fail(FailureReason.TIMED_OUT, "went offline before its Update reached it")
        # A sleeping device did not wake for its Update before its window closed (the command
        # expires with it): it keeps its package and waits for the next window.
        return Advance(DeviceState.DOWNLOADED)
    if facts.queue_mode and registered and facts.command_status == "queued":
        # A sleeping device gets its Update when it next wakes (the Update's expiry bounds that
        # wait); its install time starts once the Update went out.
        return None
    # The device has install_s from the moment the Update went to it; one never sent has as
    # long from when it was queued.
    sent = update_sent_at(facts) or queued_at
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


def wave_held(wave: int, size: int, succeeded: int, failed: int, success_percent: float) -> str | None:
    """Why a running campaign goes no further by itself: every device of its current wave ended
    and too few succeeded for the next wave to open. None while it may yet open."""
    if size == 0 or succeeded + failed < size or wave_done(size, succeeded, success_percent):
        return None
    return (f"wave {wave} ended below its success threshold: {succeeded} of {size} succeeded "
            f"({succeeded * 100 / size:.3g} % < {success_percent:g} %); retry its failed devices or abort")


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
