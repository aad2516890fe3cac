"""TelemetryWriter's on_committed: told of committed points only, never of a refused caller's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from fleet.errors import ValidationFailed
from fleet.telemetry.service import TelemetryWriter
from tests.fleet.telemetry.test_telemetry_writer import points
from tests.fleet.telemetry.test_telemetry_writer_failures import devices  # noqa: F401 - fixture


async def test_only_committed_points_are_handed_on(db, devices):  # noqa: F811
    told: list = []
    writer = TelemetryWriter(db, on_committed=told.extend)
    now = datetime.now(UTC)
    culprit = devices[1]
    try:
        good = [writer.submit(points(device, 3, now)) for device in devices if device != culprit]
        bad = writer.submit([(*culprit, now, "/3/0/9", 5.0, None, None),
                             (*culprit, now, "/3/0/0", None, "maker\x00", None)])
        await asyncio.gather(*good)
        with pytest.raises(ValidationFailed):
            await bad
        assert len(told) == 9
        assert not [p for p in told if p[1] == culprit[1]]
    finally:
        await writer.close()


async def test_a_failing_listener_does_not_fail_the_write(db, devices):  # noqa: F811
    def broken(_points) -> None:
        raise RuntimeError("a bug in the listener")

    writer = TelemetryWriter(db, on_committed=broken)
    try:
        await writer.write(points(devices[0], 2, datetime.now(UTC)))
        assert writer.committed_points == 2
    finally:
        await writer.close()
