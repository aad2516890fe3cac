"""Fixtures for simulator tests: a real CoAP listener, and simulations run in the background."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from protocols.lwm2m.listener import Listener, open_listener
from simulators import inventory
from simulators.simulation import Simulation, SimulationConfig


@pytest.fixture
async def listener(db) -> AsyncIterator[Listener]:
    async with open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0),
                             sweep_interval_s=0.2) as running:
        yield running


@contextlib.asynccontextmanager
async def running(config: SimulationConfig) -> AsyncIterator[Simulation]:
    """A simulation running in the background until the block ends (then it de-registers)."""
    simulation = Simulation(config, out=None)
    task = asyncio.create_task(simulation.run())
    ready = asyncio.create_task(simulation.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises what stopped it
    try:
        yield simulation
    finally:
        simulation.stop()
        await task


async def eventually(check: Callable[[], Awaitable[Any] | Any], *, timeout_s: float = 10.0,
                     interval_s: float = 0.1) -> Any:
    """Poll check (sync or async) until it returns something truthy; fail with its last result."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s (last: {result!r})")
        await asyncio.sleep(interval_s)


async def provision(city, tmp_path: Path, counts: dict[str, int], seed: int = 3) -> Path:
    """Create planned devices in the city over REST; return a devices file naming them."""
    specs = [spec for kind, count in counts.items()
             for spec in inventory.plan(city.slug, kind, range(1, count + 1), seed)]
    body = inventory.import_csv(specs)
    response = await city.client.post("/api/v1/devices/import", content=body.encode(),
                                      headers={"Content-Type": "text/csv"})
    assert response.status_code == 201, response.text
    path = tmp_path / "devices.csv"
    path.write_text(body)
    return path
