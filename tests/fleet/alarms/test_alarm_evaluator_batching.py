"""How the evaluator batches at ingest rate: a busy stream gathered into one batch per moment,
an idle evaluator starting at once, and a path reported twice in one batch kept in time order."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fleet.alarms.evaluator import RuleEvaluator
from fleet.alarms.models import AlarmType
from tests.conftest import make_city
from tests.fleet.alarms.test_alarm_evaluator import NIGHT, Sink, point, streetlight


async def _until(condition, tries: int = 500) -> None:
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_an_idle_evaluator_judges_at_once_and_a_busy_one_gathers(db):
    city = await make_city(db, "seoul")
    first, second = await streetlight(db, city, "light-g1"), await streetlight(db, city, "light-g2")
    sink = Sink()
    rules = RuleEvaluator(db, sink, gather_s=3600, clock=lambda: NIGHT)
    running = asyncio.create_task(rules.run())
    try:
        rules.committed([point(first, "/3416/0/5", NIGHT, True)])
        await _until(lambda: rules.batches == 1)  # idle: no hour's wait
        rules.committed([point(second, "/3416/0/5", NIGHT, True)])
        rules.committed([point(first, "/3416/0/5", NIGHT + timedelta(seconds=1), True)])
        for _ in range(20):
            await asyncio.sleep(0)
        # Within the gathering time the next points wait, newest per (device, path), together.
        assert rules.batches == 1
        assert sorted(rules._waiting) == sorted([(first.id, "/3416/0/5"), (second.id, "/3416/0/5")])
        assert [f.device_id for f in sink.of(AlarmType.LAMP_FAILURE)] == [first.id]
    finally:
        running.cancel()


async def test_a_path_reported_twice_in_one_batch_keeps_the_older_as_previous(db):
    city = await make_city(db, "seoul")
    light = await streetlight(db, city, "light-g3")
    sink = Sink()
    rules = RuleEvaluator(db, sink)
    # Newer first: the evaluator still records them in time order, so the meter fell 10 -> 4.
    await rules.evaluate([point(light, "/3416/0/47", NIGHT + timedelta(minutes=5), 4.0),
                          point(light, "/3416/0/47", NIGHT, 10.0)], NIGHT + timedelta(minutes=5))
    assert [f.present for f in sink.of(AlarmType.ENERGY_METER_BACKWARDS)] == [True]
