"""The rollout's pure decisions: one device's next move, a wave's end, the error threshold."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from fleet.campaigns.models import Delivery, DeviceState, FailureReason, Thresholds, Timeouts
from fleet.campaigns.rollout_steps import (DELIVER, EXECUTE, OBSERVE, QUIET_S, READ, Advance, DeviceFacts, Fail, NextStep,
                                           Poll, Reading, decide, delivery_from, error_verdict, health_problems,
                                           refused, reported_code, returned_version, wave_done,
                                           wave_held)

T0 = dt.datetime(2026, 12, 7, 2, tzinfo=dt.UTC)
TIMEOUTS = Timeouts(download_s=600, install_s=300)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def facts(state: DeviceState, **fields) -> DeviceFacts:
    return DeviceFacts(uuid.uuid4(), state, fields.pop("state_since", T0), **fields)


def next_move(f: DeviceFacts, now: dt.datetime = at(1), health_period_s: int = 0):
    return decide(f, target_version="2.0", timeouts=TIMEOUTS, health_period_s=health_period_s, now=now)


def test_delivery_follows_5_0_9_and_defaults_to_pull():
    assert [delivery_from(Reading(v, T0)) for v in (0, 1, 2, "1")] == [
        Delivery.PULL, Delivery.PUSH, Delivery.PULL, Delivery.PUSH]
    assert delivery_from(None) is Delivery.PULL
    assert delivery_from(Reading(7, T0)) is Delivery.PULL


def test_refused_means_the_device_answered_4xx():
    assert refused("device answered 4.04 Not Found: no object 5")
    assert refused("device does not support observing this path")
    assert not refused("no answer: timed out") and not refused(None)


def test_observed_object_5_leads_to_delivery_by_its_method():
    f = facts(DeviceState.DOWNLOADING, step=OBSERVE, step_at=T0, command_status="succeeded",
              readings={"/5/0/9": Reading(1, at(0.5))})
    assert next_move(f) == NextStep(DELIVER, True, Delivery.PUSH)


def test_a_stale_5_0_9_is_not_believed():
    f = facts(DeviceState.DOWNLOADING, step=OBSERVE, step_at=T0, command_status="succeeded",
              readings={"/5/0/9": Reading(1, at(-60))})
    assert next_move(f) == NextStep(DELIVER, True, Delivery.PULL)


def test_no_observation_falls_back_to_reads():
    f = facts(DeviceState.DOWNLOADING, step=OBSERVE, step_at=T0, command_status="failed")
    assert next_move(f) == NextStep(READ, False)
    assert next_move(facts(DeviceState.DOWNLOADING, step=OBSERVE, step_at=T0, command_status="queued")) is None


def test_downloaded_only_when_the_device_says_so_after_the_step():
    base = dict(step=DELIVER, step_at=T0, command_sent_at=T0, command_status="succeeded", observing=True)
    assert next_move(facts(DeviceState.DOWNLOADING, **base, readings={"/5/0/3": Reading(2, at(0.5))})) == \
        Advance(DeviceState.DOWNLOADED)
    assert next_move(facts(DeviceState.DOWNLOADING, **base, readings={"/5/0/3": Reading(2, at(-1))})) is None
    assert next_move(facts(DeviceState.DOWNLOADING, **base, readings={"/5/0/3": Reading(1, at(0.5))})) is None


def test_a_device_not_observing_is_polled_when_due():
    f = facts(DeviceState.DOWNLOADING, step=DELIVER, step_at=T0, command_sent_at=T0, command_status="succeeded", observing=False)
    assert next_move(f) == Poll()
    later = facts(DeviceState.DOWNLOADING, step=DELIVER, step_at=T0, command_sent_at=T0, command_status="succeeded",
                  observing=False, next_check_at=at(5))
    assert next_move(later) is None


def test_an_observed_device_quiet_for_long_is_read_too():
    """Its observation may have died with the node that made it (a restart mid-wave)."""
    base = dict(step=DELIVER, step_at=T0, command_status="succeeded", observing=True)
    assert next_move(facts(DeviceState.DOWNLOADING, **base), now=at(QUIET_S - 1)) is None
    assert next_move(facts(DeviceState.DOWNLOADING, **base), now=at(QUIET_S)) == Poll()
    heard = {"/5/0/3": Reading(1, at(20))}
    assert next_move(facts(DeviceState.DOWNLOADING, **base, readings=heard), now=at(QUIET_S + 1)) is None
    assert next_move(facts(DeviceState.DOWNLOADING, **base, readings=heard, next_check_at=at(QUIET_S + 25)),
                     now=at(QUIET_S + 20)) is None
    assert next_move(facts(DeviceState.DOWNLOADING, **base, readings=heard), now=at(QUIET_S + 20)) == Poll()


def test_download_failures_and_timeout():
    refusal = facts(DeviceState.DOWNLOADING, step=DELIVER, step_at=T0, command_sent_at=T0, command_status="failed",
                    command_error="device answered 4.00 Bad Request: bad uri")
    assert next_move(refusal) == Fail(FailureReason.DEVICE_REFUSED, "device answered 4.00 Bad Request: bad uri")
    lost = facts(DeviceState.DOWNLOADING, step=DELIVER, step_at=T0, command_sent_at=T0, command_status="expired",
                 command_error="expired before delivery")
    assert next_move(lost) == Fail(FailureReason.DOWNLOAD_FAILED, "expired before delivery")
    slow = facts(DeviceState.DOWNLOADING, step=DELIVER, step_at=T0, command_sent_at=T0, command_status="succeeded")
    assert next_move(slow, now=at(601)).reason is FailureReason.TIMED_OUT


@pytest.mark.parametrize(("code", "reason"), [(2, FailureReason.OUT_OF_STORAGE), (5, FailureReason.INTEGRITY),
                                              (8, FailureReason.INSTALL_FAILED)])
def test_update_result_codes_fail_with_their_reason(code, reason):
    f = facts(DeviceState.DOWNLOADING, step=DELIVER, step_at=T0, command_sent_at=T0, command_status="succeeded",
              readings={"/5/0/5": Reading(code, at(0.5))})
    assert next_move(f) == Fail(reason, f"Update Result {code}")
    ok = facts(DeviceState.DOWNLOADING, step=DELIVER, step_at=T0, command_sent_at=T0, command_status="succeeded",
               readings={"/5/0/5": Reading(1, at(0.5))})
    assert next_move(ok) is None


def installing(**fields) -> DeviceFacts:
    return facts(DeviceState.INSTALLING, **{"step": EXECUTE, "step_at": T0, "install_sent_at": T0,
                                            "previous_version": "1.0", "command_status": "succeeded",
                                            "command_sent_at": T0} | fields)


def test_a_sleeping_device_registering_before_its_update_went_out_has_not_come_back():
    # Queued at T0; the device wakes at 30 s with a Register on its old version, and only then
    # is the Update sent to it (at 31 s).
    waking = dict(registered_at=at(30), readings={"/3/0/3": Reading("1.0", at(30.5))})
    assert next_move(installing(**waking, command_status="queued", command_sent_at=None)) is None
    assert next_move(installing(**waking, command_status="sent", command_sent_at=at(31))) is None
    back = installing(registered_at=at(90), readings={"/3/0/3": Reading("2.0", at(91))}, command_sent_at=at(31))
    assert next_move(back, now=at(92)) == Advance(DeviceState.VERIFYING)
    # install_s (300 s) runs from the sending (a quiet device is read meanwhile, never failed).
    assert not isinstance(next_move(installing(command_status="sent", command_sent_at=at(200)), now=at(400)), Fail)
    # An Update that expired before it reached the device (its window closed, or a day passed):
    # a device still registered keeps its package and waits for the next window, however late;
    # one that went offline meanwhile has timed out.
    registered = dict(registration_expires_at=at(3600))
    for now in (at(120), at(301)):
        assert next_move(installing(command_status="expired", command_sent_at=None, **registered), now=now) == \
            Advance(DeviceState.DOWNLOADED)
    assert next_move(installing(command_status="expired", command_sent_at=None), now=at(301)) == \
        Fail(FailureReason.TIMED_OUT, "went offline before its Update reached it")


def test_back_on_the_target_version_is_verified_the_old_one_rolled_back():
    back = dict(registered_at=at(30))
    believed = {"/5/0/5": Reading(1, at(31))}
    assert next_move(installing(**back, readings={"/3/0/3": Reading("2.0", at(31))}), now=at(31)) == \
        Advance(DeviceState.VERIFYING)
    assert next_move(installing(**back, readings={"/3/0/3": Reading("1.0", at(31))} | believed), now=at(32)) == \
        Fail(FailureReason.ROLLED_BACK, "came back on 1.0")
    assert next_move(installing(**back, readings={"/3/0/3": Reading("1.5", at(31))} | believed),
                     now=at(32)).reason is FailureReason.INSTALL_FAILED


def test_back_on_the_old_version_waits_briefly_for_its_update_result():
    # Its Update Result is read or notified just after the Register: 8 names a failed install,
    # which a device back on its old version must not be mistaken for a rollback.
    back = dict(registered_at=at(30), step_at=at(29), readings={"/3/0/3": Reading("1.0", at(31))})
    assert next_move(installing(**back), now=at(32)) is None
    failed = installing(**back | {"readings": back["readings"] | {"/5/0/5": Reading(8, at(32))}})
    assert next_move(failed, now=at(33)) == Fail(FailureReason.INSTALL_FAILED, "Update Result 8")
    assert next_move(installing(**back), now=at(36)) == Fail(FailureReason.ROLLED_BACK, "came back on 1.0")


def test_a_version_reported_before_the_update_proves_nothing():
    f = installing(registered_at=at(30), readings={"/3/0/3": Reading("2.0", at(-10))})
    assert returned_version(f) is None and next_move(f) is None
    assert returned_version(installing(registered_at=at(-5), firmware_version="2.0", firmware_at=at(31))) is None
    assert returned_version(installing(registered_at=at(30), firmware_version="2.0", firmware_at=at(31))) == "2.0"


def test_install_failures():
    assert next_move(installing(), now=at(301)).reason is FailureReason.NEVER_CAME_BACK
    refused_execute = installing(command_status="failed", command_error="device answered 4.05 Method Not Allowed")
    assert next_move(refused_execute).reason is FailureReason.INSTALL_FAILED
    unknown = installing(command_status="failed", command_error="outcome unknown after a node stopped")
    assert next_move(unknown) is None  # waits for the device, not a second Update


def test_a_sleeping_device_has_the_whole_install_time_from_when_it_got_the_update():
    asleep = installing(command_status="queued", queue_mode=True, registration_expires_at=at(3600))
    assert next_move(asleep, now=at(301)) is None  # the Update waits for it to wake
    woke_late = installing(command_status="succeeded", command_sent_at=at(250), queue_mode=True)
    assert not isinstance(next_move(woke_late, now=at(301)), Fail)  # read perhaps, not failed
    assert next_move(woke_late, now=at(551)).reason is FailureReason.NEVER_CAME_BACK
    never_woke = next_move(installing(command_status="expired", queue_mode=True), now=at(301))
    assert never_woke.reason is FailureReason.NEVER_CAME_BACK and "never reached it" in never_woke.detail
    awake = next_move(installing(command_status="queued"), now=at(301))  # not asleep: unreachable
    assert awake.reason is FailureReason.NEVER_CAME_BACK and "never reached it" in awake.detail


def verifying(**fields) -> DeviceFacts:
    return facts(DeviceState.VERIFYING, returned_at=T0, registration_expires_at=at(3600), **fields)


def test_health_period():
    healthy = verifying(last_report_at=at(30))
    assert next_move(healthy, now=at(59), health_period_s=60) is None
    assert next_move(healthy, now=at(61), health_period_s=60) == Advance(DeviceState.SUCCEEDED)
    assert next_move(verifying(), now=at(1), health_period_s=0) == Advance(DeviceState.SUCCEEDED)
    assert health_problems(verifying(), at(61)) == ["reported nothing since it came back"]
    gone = facts(DeviceState.VERIFYING, returned_at=T0, registration_expires_at=at(10), last_report_at=at(5))
    assert health_problems(gone, at(61)) == ["not registered"]
    alarming = verifying(last_report_at=at(30), critical_alarm_at=at(20))
    assert next_move(alarming, now=at(61), health_period_s=60) == \
        Fail(FailureReason.UNHEALTHY, "a critical alarm since it came back")


def test_a_wave_is_done_at_its_success_share():
    assert wave_done(10, 10, 100) and wave_done(10, 9, 90) and not wave_done(10, 8, 90)
    assert wave_done(0, 0, 95)


def test_a_wave_is_held_only_once_all_of_it_ended_short_of_its_success_share():
    assert wave_held(0, 10, 8, 1, 90) is None       # one still on its way
    assert wave_held(0, 10, 9, 1, 90) is None       # enough succeeded: the next wave opens
    assert wave_held(0, 0, 0, 0, 90) is None
    assert wave_held(2, 10, 8, 2, 90) == ("wave 2 ended below its success threshold: 8 of 10 succeeded "
                                          "(80 % < 90 %); retry its failed devices or abort")


def test_the_error_threshold_counts_since_the_last_resume():
    rules = Thresholds(error_percent=20, error_min_count=10)
    assert error_verdict(7, 3, 0, 0, rules) == "error threshold: 3 of 10 ended devices failed (30 % >= 20 %)"
    assert error_verdict(6, 3, 0, 0, rules) is None  # 9 ended: too few to judge
    assert error_verdict(9, 1, 0, 0, rules) is None  # 10 %
    assert error_verdict(17, 3, 7, 3, rules) is None  # nothing failed since the resume


@pytest.mark.parametrize("odd", ["abc", "true", "2.5", "nan", "inf", "-inf", "", True, None])
def test_an_odd_reported_value_is_ignored_like_a_missing_one(odd):
    assert reported_code(Reading(odd, T0)) is None
    assert delivery_from(Reading(odd, T0)) is Delivery.PULL
    f = facts(DeviceState.DOWNLOADING, step=DELIVER, step_at=T0, command_sent_at=T0, command_status="sent",
              readings={"/5/0/3": Reading(odd, at(0.5)), "/5/0/5": Reading(odd, at(0.5))})
    assert next_move(f) is None
    f = facts(DeviceState.INSTALLING, step=EXECUTE, install_sent_at=T0, command_status="succeeded",
              readings={"/5/0/5": Reading(odd, at(0.5))})
    assert next_move(f) is None


def test_whole_numbers_are_read_however_they_are_written():
    assert [reported_code(Reading(v, T0)) for v in (2, 2.0, "2", "2.0", " 2 ", "-1", "42")] == [
        2, 2, 2, 2, 2, -1, 42]
    # A code out of the spec's range is still a failed install, never a silent wait.
    f = facts(DeviceState.INSTALLING, step=EXECUTE, install_sent_at=T0, command_status="succeeded",
              readings={"/5/0/5": Reading("42", at(0.5))})
    assert next_move(f) == Fail(FailureReason.INSTALL_FAILED, "Update Result 42")


def test_a_refused_delivery_waits_a_moment_for_the_update_result_that_explains_it():
    refusal = dict(step=DELIVER, step_at=T0, command_sent_at=T0, command_status="failed", command_completed_at=at(1),
                   command_error="device answered 4.13 Request Entity Too Large: no room")
    assert next_move(facts(DeviceState.DOWNLOADING, **refusal), now=at(2)) is None
    explained = facts(DeviceState.DOWNLOADING, **refusal, readings={"/5/0/5": Reading(2, at(1.2))})
    assert next_move(explained, now=at(2)) == Fail(FailureReason.OUT_OF_STORAGE, "Update Result 2")
    assert next_move(facts(DeviceState.DOWNLOADING, **refusal), now=at(7)) == Fail(
        FailureReason.DEVICE_REFUSED, "device answered 4.13 Request Entity Too Large: no room")


def test_a_report_from_before_the_package_went_out_is_the_last_attempt_s():
    # A retried device notifies its last attempt's Update Result (5) after the step was queued
    # but before the dispatcher sent the new Package URI at 2 s.
    stale = {"/5/0/5": Reading(5, at(1)), "/5/0/3": Reading(2, at(1))}
    queued = facts(DeviceState.DOWNLOADING, step=DELIVER, step_at=T0, command_status="queued", readings=stale)
    assert next_move(queued, now=at(3)) is None
    sent = facts(DeviceState.DOWNLOADING, step=DELIVER, step_at=T0, command_sent_at=at(2), command_status="sent",
                 readings=stale)
    assert next_move(sent, now=at(3)) is None
