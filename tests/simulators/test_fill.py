"""The bins' fill model (simulators.fill): weekdays, per-bin rates, sensor noise and spikes,
emptying rules, and the same model in the live simulated bin (no network, no database)."""

from __future__ import annotations

import dataclasses

from datetime import UTC, datetime, timedelta
from statistics import median
from zoneinfo import ZoneInfo

import pytest

from simulators.clock import SimClock
from simulators.devices import WasteBin, World
from simulators.environment import Environment
from simulators.faults import DeviceFaults, FaultPlan
from simulators.fill import (SENSOR_SIGMA, FillModel, at_threshold, fill_history, fill_series, fixed_round,
                             local_hours, weekday_factors)
from simulators.inventory import DeviceSpec
from simulators.scheduler import Scheduler
from simulators.stats import Stats

SEOUL = ZoneInfo("Asia/Seoul")
MONDAY = datetime(2026, 11, 23, 0, 0, tzinfo=SEOUL)


def spec(district: str = "Jung-gu", kind: str = "inorganic", capacity: int = 240, n: int = 1) -> DeviceSpec:
    return DeviceSpec("waste_bin", f"test-wb-{n}", 37.56, 126.99, district,
                      attributes={"waste_kind": kind, "capacity_litres": capacity})


def day_litres(model: FillModel, day: int) -> float:
    start = local_hours(MONDAY.timestamp(), SEOUL) + 24 * day
    return model.expected_litres(start, start + 24)


def test_weekday_factors_average_one_and_weekends_are_heavier_where_people_go_out():
    for district in ("Jung-gu", "Songpa-gu", "Dobong-gu"):
        for kind in ("organic", "glass"):
            assert sum(weekday_factors(district, kind)) == pytest.approx(7)
    park, commercial = weekday_factors("Songpa-gu", "plastic"), weekday_factors("Jung-gu", "plastic")
    assert min(park[5:]) > 1.4 * max(park[:5]) and min(commercial[5:]) > max(commercial[:5])
    organic = weekday_factors("Dobong-gu", "organic")
    assert organic[0] == max(organic)  # Monday: the weekend's kitchen waste


def test_expected_litres_follow_the_weekday_and_hour_and_a_week_holds_seven_days():
    model = FillModel.of(spec("Songpa-gu"), seed=1)
    week = sum(day_litres(model, d) for d in range(7))
    assert week == pytest.approx(7 * model.litres_per_day)
    assert day_litres(model, 5) > 1.8 * day_litres(model, 1)  # Saturday in the park
    start = local_hours(MONDAY.timestamp(), SEOUL)
    assert model.expected_litres(start + 12, start + 13) > 5 * model.expected_litres(start + 3, start + 4)


def test_bins_have_their_own_rates_reproducibly():
    rates = {FillModel.of(spec(n=n), seed=1).litres_per_day for n in range(20)}
    assert len(rates) == 20 and max(rates) > 1.5 * min(rates)
    assert FillModel.of(spec(n=3), seed=1) == FillModel.of(spec(n=3), seed=1) != FillModel.of(spec(n=3), seed=2)


def test_readings_are_noisy_with_rare_spikes_far_off():
    history = fill_history(spec(kind="glass", capacity=1100), MONDAY, days=14, seed=3, emptying="never")
    errors = [r - t for (_, r), (_, t) in zip(history.readings, history.truth, strict=True)]
    spikes = [e for e in errors if abs(e) > 15]
    assert 1 <= len(spikes) <= 20
    usual = [abs(e) for e in errors if abs(e) <= 15]
    assert SENSOR_SIGMA / 2 < median(usual) / 0.674 < SENSOR_SIGMA * 1.5  # a gaussian's median |e|
    assert all(0 <= r <= 100 for _, r in history.readings)


def test_series_are_reproducible_and_timed_every_interval():
    first = fill_series(spec(), MONDAY, days=2, seed=5, interval_s=1800)
    assert first == fill_series(spec(), MONDAY, days=2, seed=5, interval_s=1800)
    assert len(first) == 96 and first[0][0] == MONDAY.astimezone(UTC) + timedelta(minutes=30)
    assert first[1][0] - first[0][0] == timedelta(minutes=30)
    naive = fill_series(spec(), MONDAY.replace(tzinfo=None), days=2, seed=5, interval_s=1800)
    assert naive == first  # a naive start is the city's local time


def test_emptying_rules():
    model = FillModel.of(spec("Jung-gu", "organic"), seed=1)
    round_ = fill_history(model, MONDAY, days=7, seed=1)  # default: the fixed night round
    assert 5 <= len(round_.emptied) <= 7
    for when in round_.emptied:
        hour = when.astimezone(SEOUL).hour + when.astimezone(SEOUL).minute / 60
        assert abs((hour - model.round_hour) % 24) < 0.25 or abs((hour - model.round_hour) % 24 - 24) < 0.25
    threshold = fill_history(model, MONDAY, days=7, seed=1, emptying=at_threshold(80))
    assert threshold.emptied and max(t for _, t in threshold.truth) < 80 + 10
    never = fill_history(model, MONDAY, days=7, seed=1, emptying="never", initial_percent=0)
    assert not never.emptied and never.truth[-1][1] == 100  # full, and no fuller
    custom = fill_history(model, MONDAY, days=1, seed=1, emptying=lambda _a, _b, percent: percent > 20,
                          initial_percent=0)
    assert custom.emptied
    with pytest.raises(ValueError):
        fill_history(model, MONDAY, days=1, seed=1, emptying="weekly")
    passing = model.round_hour + 24 * 30
    assert fixed_round(model)(passing - 0.1, passing + 0.1, 100)
    assert not fixed_round(model)(passing - 0.1, passing + 0.1, model.worth_emptying - 1)
    assert not fixed_round(model)(passing + 0.1, passing + 0.3, 100)


def world(collection: str) -> World:
    clock = SimClock(60, MONDAY.timestamp() + 12 * 3600, "Asia/Seoul")
    return World(Environment(clock), Scheduler(), Stats(), FaultPlan(), 1,
                 {"streetlight": 900, "waste_bin": 900, "wifi_ap": 900}, collection=collection)


class _Link:
    silent = False
    reports_due = 0

    class network:
        stopping = False

    def report_soon(self) -> None:
        self.reports_due += 1

    def want(self, _what) -> None:
        pass


def test_the_live_bin_uses_the_same_model_and_sensor():
    bin_ = WasteBin(spec(n=7), world("round"), DeviceFaults())
    assert bin_.model == FillModel.of(spec(n=7), seed=1)
    assert bin_.round_offset_h == bin_.model.round_hour
    truth = bin_.fill_percentage()
    assert bin_.reported_fill() == bin_.reported_fill()  # one measurement per moment
    assert bin_.reported_fill() == pytest.approx(truth, abs=5) or abs(bin_.reported_fill() - truth) > 15


def test_a_restarted_bin_carries_on_from_the_fill_fleet_stored():
    fresh = WasteBin(spec(n=9), world("fleet"), DeviceFaults())
    again = WasteBin(dataclasses.replace(spec(n=9), fill_percent=73.5), world("fleet"), DeviceFaults())
    over = WasteBin(dataclasses.replace(spec(n=9), fill_percent=121.0), world("fleet"), DeviceFaults())
    assert again.fill_percentage() == 73.5 and over.fill_percentage() == 100.0
    assert fresh.fill_percentage() <= 60 and again.collected_at == pytest.approx(fresh.collected_at, abs=1)  # same draws after


@pytest.mark.parametrize("collection, rounds", [("round", 1), ("fleet", 0)])
def test_only_fleet_empties_the_bins_in_fleet_mode(collection, rounds):
    bin_ = WasteBin(spec(n=8), world(collection), DeviceFaults())
    bin_.link = _Link()
    bin_.on_registered()
    assert len(bin_.world.scheduler) == 1 + rounds  # its periodic reports, and the crew's round
    bin_.fill_l = bin_.capacity_l * 0.7
    counted = bin_.collections
    bin_.collect()  # the "emptied" Execute or a truck at the bin
    assert bin_.fill_percentage() <= 2 and bin_.collections == counted + 1
    bin_.collect()  # the same emptying told twice (the truck, then Fleet's Execute)
    assert bin_.collections == counted + 1
