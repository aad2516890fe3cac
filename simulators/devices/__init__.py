"""The kinds of simulated device, one module each, by Fleet's device kind names."""

from __future__ import annotations

from simulators.devices.access_point import AccessPoint
from simulators.devices.base import SimulatedDevice, World
from simulators.devices.streetlight import Streetlight
from simulators.devices.waste_bin import WasteBin

KINDS: dict[str, type[SimulatedDevice]] = {
    Streetlight.kind: Streetlight,
    WasteBin.kind: WasteBin,
    AccessPoint.kind: AccessPoint,
}

__all__ = ["KINDS", "AccessPoint", "SimulatedDevice", "Streetlight", "WasteBin", "World"]
