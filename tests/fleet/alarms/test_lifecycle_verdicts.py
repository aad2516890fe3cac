"""The pure lifecycle rules: findings of one call reduced per (device, type), occurrences, severity."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from fleet.alarms.lifecycle import added_occurrences, is_due, severity_of, verdicts
from fleet.alarms.models import AlarmType, Finding, Severity
from fleet.alarms.settings import DEFAULTS, merged, validate_overrides
from fleet.errors import ValidationFailed

T0 = datetime(2026, 12, 1, tzinfo=UTC)
CITY, DEVICE = uuid.uuid4(), uuid.uuid4()


def at(minutes: float, present: bool, alarm_type=AlarmType.LAMP_FAILURE, **extra) -> Finding:
    return Finding(CITY, DEVICE, alarm_type, present, T0 + timedelta(minutes=minutes), **extra)


def test_runs_of_presence_are_occurrences_in_time_order():
    [v] = verdicts([at(3, True, value=3), at(0, True, value=0), at(1, False), at(2, False)])
    assert (v.occurrences, v.first_present_at, v.last_present_at, v.value) == (2, T0, at(3, True).at, 3)
    assert v.absent_since is None and v.present and v.starts_present


def test_absence_after_the_last_presence_starts_clearing():
    [v] = verdicts([at(0, True), at(1, False), at(2, False)])
    assert v.absent_since == at(1, False).at and v.last_at == at(2, False).at and v.occurrences == 1


def test_each_type_and_device_is_its_own_verdict():
    found = verdicts([at(0, True), at(0, False, AlarmType.DAY_BURNER),
                      Finding(CITY, uuid.uuid4(), AlarmType.LAMP_FAILURE, True, T0)])
    assert len(found) == 3


def test_a_continuing_presence_adds_no_occurrence_a_return_after_absence_does():
    [continuing] = verdicts([at(0, True), at(1, True)])
    assert added_occurrences(continuing, clearing_since=None) == 0
    assert added_occurrences(continuing, clearing_since=T0) == 1
    [flapping] = verdicts([at(0, True), at(1, False), at(2, True)])
    assert added_occurrences(flapping, clearing_since=None) == 1
    [absent] = verdicts([at(0, False)])
    assert added_occurrences(absent, clearing_since=None) == 0


def test_severity_settings_then_rule_then_default():
    settings = merged({"severities": {"day_burner": "critical"}})
    assert severity_of("day_burner", settings, Severity.WARNING) is Severity.CRITICAL
    assert severity_of("lamp_failure", settings, Severity.WARNING) is Severity.WARNING
    assert severity_of("lamp_failure", settings, None) is Severity.MAJOR


def test_clears_once_absent_for_clear_after_minutes():
    assert not is_due(None, T0, DEFAULTS)
    assert not is_due(T0, T0 + timedelta(minutes=9, seconds=59), DEFAULTS)
    assert is_due(T0, T0 + timedelta(minutes=10), DEFAULTS)


def test_city_then_group_layers_merge_severities():
    settings = merged({"severities": {"day_burner": "major"}, "clear_after_minutes": 3},
                      {"severities": {"bin_fire": "major"}})
    assert settings.clear_after_minutes == 3
    assert settings.severities == {"day_burner": "major", "bin_fire": "major"}


@pytest.mark.parametrize(("body", "field"), [
    ({"nope": 1}, "nope"), ({"severities": {"x": "major"}}, "severities.x"),
    ({"severities": {"bin_fire": "loud"}}, "severities.bin_fire"), ({"severities": []}, "severities"),
    ({"overflow_fill_percent": 101}, "overflow_fill_percent"), ({"overloaded_clients": "many"}, "overloaded_clients"),
])
def test_overrides_are_checked_field_by_field(body, field):
    with pytest.raises(ValidationFailed) as caught:
        validate_overrides(body)
    assert [e.field for e in caught.value.errors] == [field]


def test_overrides_keep_only_what_was_given():
    assert validate_overrides({"overloaded_clients": 50}) == {"overloaded_clients": 50}
