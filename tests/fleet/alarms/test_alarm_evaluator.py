"""The evaluator against real PostgreSQL: fed by the telemetry writer after COMMIT, context and
latest values loaded from the database, previous values kept across batches."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from fleet.alarms import evaluator
from fleet.alarms.evaluator import RuleEvaluator
from fleet.alarms.models import AlarmType, Finding
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.telemetry.service import TelemetryWriter
from tests.conftest import make_city

NIGHT = datetime(2026, 6, 21, 15, 0, tzinfo=UTC)  # midnight in Seoul


@dataclass(frozen=True)
class Placed:
    tenant_id: UUID
    id: UUID


class Sink:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    async def __call__(self, findings: Sequence[Finding]) -> None:
        self.findings.extend(findings)

    def of(self, type_: AlarmType) -> list[Finding]:
        return [f for f in self.findings if f.type == type_]


async def streetlight(db, city, endpoint: str, **attributes):
    device = await DeviceService(db).create_validated(city.principal, NewDevice(
        kind=DeviceKind.STREETLIGHT, endpoint=endpoint, lat=37.56, lon=126.97, attributes=attributes))
    return Placed(city.tenant_id, device.id)


def point(device, path: str, at: datetime, value):
    if isinstance(value, bool):
        return (device.tenant_id, device.id, at, path, None, None, value)
    return (device.tenant_id, device.id, at, path, float(value), None, None)


@pytest.fixture
async def sink() -> Sink:
    return Sink()


@pytest.fixture
async def writer_and_rules(db, sink):
    rules = RuleEvaluator(db, sink)
    writer = TelemetryWriter(db, on_committed=rules.committed)
    yield writer, rules
    await writer.close()


async def judged(rules: RuleEvaluator, now: datetime) -> None:
    """Evaluate what the writer handed over, as the run loop would (at a chosen `now`)."""
    batch, rules._waiting = rules._waiting, {}
    await rules.evaluate(list(batch.values()), now)


async def test_a_reading_is_judged_with_values_committed_earlier(db, writer_and_rules, sink):
    city = await make_city(db, "seoul")
    light = await streetlight(db, city, "light-1", nominal_wattage=100)
    writer, rules = writer_and_rules
    await writer.write([point(light, "/3416/0/3", NIGHT, 50)])
    rules._waiting.clear()  # as if judged on another node: only device_state knows it
    await writer.write([point(light, "/3416/0/46", NIGHT + timedelta(seconds=10), 80.0)])
    await judged(rules, NIGHT + timedelta(seconds=11))
    anomaly = sink.of(AlarmType.POWER_ANOMALY)
    assert [(f.present, f.device_id) for f in anomaly] == [(True, light.id)]
    assert anomaly[0].detail == "80 W instead of 50 W (+60 %)"


async def test_an_energy_meter_going_backwards_across_batches(db, writer_and_rules, sink):
    city = await make_city(db, "seoul")
    light = await streetlight(db, city, "light-2")
    writer, rules = writer_and_rules
    for minutes, kwh in ((0, 100.0), (5, 100.5), (10, 90.0)):
        await writer.write([point(light, "/3416/0/47", NIGHT + timedelta(minutes=minutes), kwh)])
        await judged(rules, NIGHT + timedelta(minutes=minutes))
    assert [f.present for f in sink.of(AlarmType.ENERGY_METER_BACKWARDS)] == [False, True]


async def test_newest_value_per_path_is_kept_while_waiting_and_other_paths_cost_nothing(db, writer_and_rules, sink):
    city = await make_city(db, "seoul")
    light = await streetlight(db, city, "light-3")
    writer, rules = writer_and_rules
    await writer.write([point(light, "/3416/0/5", NIGHT, True), point(light, "/3416/0/15", NIGHT, 7.0)])
    await writer.write([point(light, "/3416/0/5", NIGHT + timedelta(seconds=1), False)])
    assert list(rules._waiting) == [(light.id, "/3416/0/5")]
    await judged(rules, NIGHT)
    assert [f.present for f in sink.of(AlarmType.LAMP_FAILURE)] == [False]


async def test_a_full_queue_drops_and_counts(db, sink):
    rules = RuleEvaluator(db, sink, max_waiting=1)
    city = await make_city(db, "seoul")
    light = await streetlight(db, city, "light-4")
    rules.committed([point(light, "/3416/0/5", NIGHT, True), point(light, "/3416/0/3", NIGHT, 100)])
    assert rules.dropped == 1 and len(rules._waiting) == 1


async def test_decommissioned_devices_are_not_judged_and_settings_reload(db, sink):
    city = await make_city(db, "seoul")
    light = await streetlight(db, city, "light-5")
    calls = []

    async def settings(tenant_id, device_ids):
        calls.append((tenant_id, list(device_ids)))
        return {}

    rules = RuleEvaluator(db, sink, settings=settings, context_ttl_s=0)
    await rules.evaluate([point(light, "/3416/0/5", NIGHT, True)], NIGHT)
    await rules.evaluate([point(light, "/3416/0/5", NIGHT + timedelta(seconds=1), True)], NIGHT)
    assert calls == [(city.tenant_id, [light.id])] * 2  # a zero time-to-live loads every time
    await DeviceService(db).decommission(city.principal, light.id)
    await rules.evaluate([point(light, "/3416/0/5", NIGHT + timedelta(seconds=2), True)], NIGHT)
    assert len(sink.of(AlarmType.LAMP_FAILURE)) == 2


async def test_the_run_loop_hands_findings_to_the_sink(db, sink):
    city = await make_city(db, "seoul")
    light = await streetlight(db, city, "light-6")
    rules = RuleEvaluator(db, sink)
    task = asyncio.create_task(rules.run())
    try:
        rules.committed([point(light, "/3416/0/5", NIGHT, True)])
        for _ in range(100):
            if sink.findings:
                break
            await asyncio.sleep(0.05)
        assert [f.type for f in sink.findings] == [AlarmType.LAMP_FAILURE]
    finally:
        task.cancel()


async def test_an_absence_repeated_within_a_minute_is_handed_on_once(db, sink):
    city = await make_city(db, "seoul")
    light = await streetlight(db, city, "light-7")
    rules = RuleEvaluator(db, sink)
    for seconds, failed in ((0, False), (1, False), (2, True), (3, False), (4, False), (5, True), (6, True)):
        await rules.evaluate([point(light, "/3416/0/5", NIGHT + timedelta(seconds=seconds), failed)], NIGHT)
    assert [f.present for f in sink.of(AlarmType.LAMP_FAILURE)] == [False, True, False, True, True]
    rules.absent_repeat_s = 0
    await rules.evaluate([point(light, "/3416/0/5", NIGHT + timedelta(seconds=7), False)], NIGHT)
    await rules.evaluate([point(light, "/3416/0/5", NIGHT + timedelta(seconds=8), False)], NIGHT)
    assert [f.present for f in sink.of(AlarmType.LAMP_FAILURE)][-2:] == [False, False]


async def test_a_dimming_push_is_judged_against_the_new_target_not_the_cached_one(db, writer_and_rules, sink):
    # Noon in Seoul: a light lit by day is a day burner, unless the schedule just lit it.
    noon = datetime(2026, 6, 21, 3, 0, tzinfo=UTC)
    city = await make_city(db, "seoul")
    light = await streetlight(db, city, "light-1")
    writer, rules = writer_and_rules
    async with db.system_tx() as conn:
        await conn.execute("insert into lighting_targets (device_id, tenant_id, dimming_level, path, since)"
                           " values ($1, $2, 0, '/3416/0/2', $3)", light.id, light.tenant_id, noon)
    await writer.write([point(light, "/3416/0/3", noon, 0)])
    await judged(rules, noon)  # context (with target 0) now cached
    async with db.system_tx() as conn:
        await conn.execute("update lighting_targets set dimming_level = 80, since = $2 where device_id = $1",
                           light.id, noon + timedelta(seconds=5))
    await writer.write([point(light, "/3416/0/3", noon + timedelta(seconds=10), 80)])
    await judged(rules, noon + timedelta(seconds=11))
    assert [f.present for f in sink.of(AlarmType.DAY_BURNER)][-1] is False


async def test_what_a_node_keeps_per_device_is_bounded(db, sink, monkeypatch):
    monkeypatch.setattr(evaluator, "MAX_DEVICES", 2)
    city = await make_city(db, "seoul")
    lights = [await streetlight(db, city, f"light-bound-{n}") for n in range(3)]
    rules = RuleEvaluator(db, sink)
    for light in lights:
        await rules.evaluate([point(light, "/3416/0/5", NIGHT, True)], NIGHT)
    assert len(rules._contexts) <= 2 and len(rules._observed) <= 2
    assert len(sink.of(AlarmType.LAMP_FAILURE)) == 3
