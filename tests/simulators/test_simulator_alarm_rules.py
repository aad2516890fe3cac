"""Simulated devices with forced faults, over real UDP: each fault reaches the alarm rules'
sink as the right finding, from the device's own reports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from fleet.alarms.evaluator import RuleEvaluator
from fleet.alarms.models import AlarmType, Finding
from protocols.lwm2m.listener import Listener, open_listener
from simulators.faults import FaultPlan
from tests.simulators.conftest import eventually, running
from tests.simulators.test_simulator_fleet import config

FAULTS = {"lamp_failure": AlarmType.LAMP_FAILURE, "overflow": AlarmType.BIN_OVERFLOW,
          "knockover": AlarmType.BIN_KNOCKED_OVER, "fire": AlarmType.BIN_FIRE}


class Collected(list):
    async def __call__(self, findings: Sequence[Finding]) -> None:
        self.extend(findings)


@pytest.fixture
async def findings() -> Collected:
    return Collected()


@pytest.fixture
async def rules(db, findings) -> RuleEvaluator:
    return RuleEvaluator(db, findings)


@pytest.fixture
async def listener(db, rules) -> AsyncIterator[Listener]:
    async with open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0), sweep_interval_s=0.2,
                             rules=rules) as running_listener:
        yield running_listener


def judge_in_simulated_time(rules: RuleEvaluator, simulation) -> None:
    """The simulated devices live in their own time (a noon, an evening): the sun's place
    must be judged in it, not in the machine's."""
    clock = simulation.world.clock
    rules.clock = lambda: datetime.fromtimestamp(clock.now(), UTC)


async def test_each_forced_fault_is_found(db, listener, rules, city_factory, api_url, findings):
    city = await city_factory("seoul")
    plan = FaultPlan.parse([f"{fault}=0.5" for fault in FAULTS])
    settings = config(listener, api_url, city, counts={"streetlight": 2, "waste_bin": 4, "wifi_ap": 1},
                      faults=plan)
    async with running(settings) as simulation:
        judge_in_simulated_time(rules, simulation)
        struck = {fault: {d.endpoint for d in simulation.devices if fault in d.faults.forced}
                  for fault in FAULTS}
        async with db.system_tx() as conn:
            ids = {r["endpoint"]: r["id"] for r in await conn.fetch("select endpoint, id from devices")}

        def found() -> dict[str, set]:
            present = {(f.device_id, f.type) for f in findings if f.present}
            return {fault: {e for e in endpoints if (ids[e], FAULTS[fault]) in present}
                    for fault, endpoints in struck.items()}

        await eventually(lambda: found() == struck, timeout_s=20)
    assert all(struck.values())
    # Devices no fault struck raised none of these alarms.
    faulty = {ids[e] for endpoints in struck.values() for e in endpoints}
    assert not [f for f in findings if f.present and f.device_id not in faulty and f.type in FAULTS.values()]


async def test_a_stuck_relay_at_noon_is_a_day_burner(db, listener, rules, city_factory, api_url, findings):
    from tests.simulators.test_simulator_fleet import NOON

    city = await city_factory("seoul")
    settings = config(listener, api_url, city, counts={"streetlight": 2, "waste_bin": 0, "wifi_ap": 0},
                      faults=FaultPlan.parse(["day_burner=0.5"]), start=NOON)
    async with running(settings) as simulation:
        judge_in_simulated_time(rules, simulation)
        (burner,) = [d.endpoint for d in simulation.devices if "day_burner" in d.faults.forced]
        async with db.system_tx() as conn:
            ids = {r["endpoint"]: r["id"] for r in await conn.fetch("select endpoint, id from devices")}

        def burning() -> set:
            return {f.device_id for f in findings if f.type == AlarmType.DAY_BURNER and f.present}

        await eventually(lambda: burning() == {ids[burner]}, timeout_s=20)
    # The other light, dark at noon as it should be, was judged and found fine.
    assert any(f.type == AlarmType.DAY_BURNER and not f.present for f in findings)
