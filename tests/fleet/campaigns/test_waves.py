"""How a campaign's devices split into waves."""

from __future__ import annotations

from fleet.campaigns.models import Waves
from fleet.campaigns.waves import wave_sizes


def test_a_percentage_canary_then_growing_waves():
    assert wave_sizes(10_000, Waves(canary_percent=1, growth=4)) == [100, 400, 1600, 6400, 1500]


def test_a_counted_canary_then_fixed_waves():
    assert wave_sizes(10, Waves(canary=2, size=3)) == [2, 3, 3, 2]


def test_a_canary_is_at_least_one_device_and_at_most_all():
    assert wave_sizes(5, Waves(canary_percent=1, growth=2)) == [1, 2, 2]
    assert wave_sizes(3, Waves(canary=10, size=1)) == [3]


def test_no_devices_no_waves():
    assert wave_sizes(0, Waves(canary=1, size=1)) == []


def test_sizes_always_add_up():
    for devices in (1, 7, 99, 1234):
        assert sum(wave_sizes(devices, Waves(canary_percent=3, growth=1.5))) == devices
