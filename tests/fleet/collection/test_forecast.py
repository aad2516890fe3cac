"""The pure fill-forecast logic: learning rates per hour of the week, spikes, emptyings, the
borrowed mean and the prediction with its band."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from fleet.collection.forecast import (SLOTS, Profile, Reading, effective_rates, learn, mean_profile,
                                       predict, slot_of)

SEOUL = ZoneInfo("Asia/Seoul")
MONDAY = datetime(2026, 11, 2, 0, 0, tzinfo=SEOUL).astimezone(UTC)  # Monday 00:00 local


def _rate(slot: int) -> float:
    return 2.0 if 8 <= slot % 24 < 20 else 0.2  # busy days, quiet nights


def _series(days: int, *, noise: float = 0.0, seed: int = 1, empty_at: float = 70.0) -> list[Reading]:
    rnd, fill, out = random.Random(seed), 5.0, []
    for h in range(days * 24):
        at = MONDAY + timedelta(hours=h)
        out.append(Reading(at, round(fill + rnd.gauss(0, noise), 1)))
        fill += _rate(slot_of(at, SEOUL))
        if fill >= empty_at:
            fill = 2.0
    return out


def test_slot_is_the_local_hour_of_the_week():
    assert slot_of(MONDAY, SEOUL) == 0
    assert slot_of(MONDAY + timedelta(days=2, hours=13), SEOUL) == 2 * 24 + 13
    assert slot_of(MONDAY - timedelta(hours=1), SEOUL) == SLOTS - 1


def test_learns_the_rate_of_each_hour_of_the_week():
    learned = learn(None, _series(14), [], SEOUL)
    rates = effective_rates(learned.profile)
    assert rates[9] == pytest.approx(2.0, abs=0.05)
    assert rates[2] == pytest.approx(0.2, abs=0.05)
    assert learned.profile.history_h > 48


def test_emptyings_are_detected_from_the_drop_and_teach_no_rate():
    learned = learn(None, _series(7), [], SEOUL)
    assert learned.drops and all(d.fill_before > 60 and d.fill_after < 10 for d in learned.drops)
    assert learned.profile.last_emptied_at == learned.drops[-1].at
    assert min(effective_rates(learned.profile)) >= 0


def test_a_known_emptying_explains_the_drop():
    readings = _series(7)
    drop = next(b.at for a, b in zip(readings, readings[1:]) if b.fill < a.fill - 15)
    learned = learn(None, readings, [drop - timedelta(minutes=20)], SEOUL)
    assert drop not in [d.at for d in learned.drops]


def test_a_spike_is_ignored():
    clean = learn(None, _series(14), [], SEOUL).profile
    readings = _series(14)
    spiked = [Reading(r.at, r.fill + 60) if i % 37 == 5 else r for i, r in enumerate(readings)]
    learned = learn(None, spiked, [], SEOUL)
    assert not learned.drops or len(learned.drops) == len(learn(None, readings, [], SEOUL).drops)
    assert effective_rates(learned.profile)[9] == pytest.approx(effective_rates(clean)[9], abs=0.05)


def test_noise_is_tolerated_and_measured():
    learned = learn(None, _series(28, noise=1.0), [], SEOUL).profile
    rates = effective_rates(learned)
    busy = [rates[d * 24 + h] for d in range(7) for h in range(9, 19)]
    assert sum(busy) / len(busy) == pytest.approx(2.0, abs=0.25)
    assert 0.5 < learned.residual_sd < 3


def test_incremental_learning_matches_one_pass():
    readings = _series(14)
    whole = learn(None, readings, [], SEOUL).profile
    first = learn(None, readings[:100], [], SEOUL).profile
    rest = [r for r in readings if r.at > first.through]
    second = learn(first, rest, [], SEOUL).profile
    assert second.through == whole.through
    assert effective_rates(second)[9] == pytest.approx(effective_rates(whole)[9], abs=0.01)


def test_the_newest_reading_waits_for_its_neighbour():
    readings = _series(2)
    profile = learn(None, readings, [], SEOUL).profile
    assert profile.through == readings[-2].at


def test_prediction_integrates_the_rates_to_threshold_and_full():
    rates = [_rate(s) for s in range(SLOTS)]
    at = MONDAY + timedelta(hours=8)  # 08:00 local: 2 %/h from now
    p = predict(rates, 1.0, 50.0, at, at, at + timedelta(hours=24), 70.0, SEOUL)
    assert p.hours_to_threshold == pytest.approx(10.0, abs=0.01)
    assert p.hours_to_threshold_low < p.hours_to_threshold < p.hours_to_threshold_high
    assert p.fill_until == pytest.approx(50 + 24 + 12 * 0.2, abs=0.01)
    # 08:00-20:00 gains 24 points (74 %), the night's 0.2 %/h 2.4 more: 76.4 % at 08:00 on
    # Tuesday, then 2 %/h again; past `until` but within the horizon asked for.
    late = predict(rates, 0.0, 50.0, at, at, at + timedelta(hours=24), 80.0, SEOUL,
                   horizon=at + timedelta(hours=72))
    assert late.hours_to_threshold == pytest.approx(24 + 3.6 / 2, abs=0.01)
    assert late.hours_to_full == pytest.approx(24 + (100 - 76.4) / 2, abs=0.01)


def test_hours_count_from_now_and_are_none_beyond_the_horizon():
    rates = [0.1] * SLOTS
    at = MONDAY
    now = at + timedelta(hours=10)
    p = predict(rates, 0.1, 10.0, at, now, now + timedelta(hours=24), 80.0, SEOUL)
    assert p.hours_to_threshold is None and p.hours_to_full is None
    assert p.fill_until == pytest.approx(10 + 3.4, abs=0.01)
    full = predict(rates, 0.1, 85.0, at, now, now + timedelta(hours=24), 80.0, SEOUL)
    assert full.hours_to_threshold == 0


def test_the_fill_expected_stops_at_full():
    rates = [5.0] * SLOTS
    at = MONDAY
    p = predict(rates, 0.1, 90.0, at, at, at + timedelta(hours=24), 80.0, SEOUL)
    assert p.fill_until == 100.0 and p.hours_to_full == pytest.approx(2.0)
    # An overflowing bin reads above 100 %: it stays at what it read, it does not grow.
    over = predict(rates, 0.1, 124.5, at, at, at + timedelta(hours=24), 80.0, SEOUL)
    assert over.fill_until == 124.5 and over.hours_to_full == 0


def test_mean_profile_averages_bins():
    rates, sd = mean_profile([[1.0] * SLOTS, [3.0] * SLOTS], [1.0, 2.0])
    assert rates[5] == 2.0 and sd == 1.5


def test_an_empty_profile_has_no_history():
    assert Profile().history_h == 0


def test_an_execute_acknowledged_just_after_the_drop_explains_it():
    readings = _series(7)
    drop = next(b.at for a, b in zip(readings, readings[1:]) if b.fill < a.fill - 15)
    learned = learn(None, readings, [drop + timedelta(minutes=2)], SEOUL)
    assert drop not in [d.at for d in learned.drops]
    assert learned.profile.last_emptied_at >= drop


def test_a_known_emptying_without_a_fall_teaches_the_rate_as_usual():
    readings = _series(3, empty_at=200)
    rising = learn(None, readings, [readings[30].at - timedelta(minutes=10)], SEOUL).profile
    assert rising.weights == learn(None, readings, [], SEOUL).profile.weights
