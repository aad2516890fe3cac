"""Supervision: a crashed task is logged once, restarted with back-off, and /readyz names it meanwhile."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from structlog.testing import capture_logs

from fleet.supervision import Health, Supervisor
from tests.conftest import serve_api


class Gate:
    """A back-off sleep the test opens by hand, so nothing depends on timing."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.open = asyncio.Event()
        self.delays: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.waiting.set()
        await self.open.wait()
        self.open.clear()


async def test_a_crashed_component_is_restarted_and_readyz_names_it_meanwhile(db):
    health = Health()
    gate = Gate()
    supervisor = Supervisor(health, sleep=gate.sleep)
    runs = 0
    running = asyncio.Event()

    async def sweep() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("the first sweep trips over a bug")
        running.set()
        await asyncio.Event().wait()

    async with serve_api(db, health=health) as url, httpx.AsyncClient(base_url=url) as client:
        with capture_logs() as logs:
            supervisor.start("registration-sweep", sweep)
            await gate.waiting.wait()
            during = await client.get("/readyz")
            assert during.status_code == 503
            assert during.headers["content-type"].startswith("application/problem+json")
            body = during.json()
            assert "registration-sweep" in body["detail"]
            assert body["components"]["registration-sweep"].startswith("crashed (RuntimeError)")
            gate.open.set()
            await running.wait()
            after = await client.get("/readyz")
            assert after.status_code == 200
            assert after.json()["components"] == {"registration-sweep": "ok"}
        await supervisor.stop()
    crashes = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(crashes) == 1 and crashes[0]["component"] == "registration-sweep"
    assert crashes[0]["exc_info"] is not None
    assert runs == 2 and gate.delays == [0.5]


async def test_back_off_doubles_up_to_its_cap_and_only_the_first_crash_is_an_error():
    health = Health()
    gate = Gate()
    supervisor = Supervisor(health, first_s=0.5, max_s=2.0, sleep=gate.sleep)

    async def always_fails() -> None:
        raise ValueError("broken")

    with capture_logs() as logs:
        supervisor.start("broken", always_fails)
        for _ in range(4):
            await gate.waiting.wait()
            gate.waiting.clear()
            gate.open.set()
        await gate.waiting.wait()
        await supervisor.stop()
    assert gate.delays == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert [e["log_level"] for e in logs if e["event"].startswith("component crashed")] == \
        ["error", "warning", "warning", "warning", "warning"]


@pytest.mark.parametrize("changes", [3, 10])
def test_the_database_state_is_logged_once_per_change(changes):
    health = Health(settle_s=0)
    with capture_logs() as logs:
        for _ in range(changes):
            health.database_lost(ConnectionRefusedError())
        for _ in range(changes):
            health.database_back()
    assert [e["event"] for e in logs] == ["database lost", "database back"]


class RecordingHealth(Health):
    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[str, str | None]] = []

    def report(self, component: str, problem: str | None) -> None:
        self.history.append((component, problem))
        super().report(component, problem)


async def test_the_listeners_sweep_is_restarted_after_a_crash(db):
    from datetime import timedelta

    from protocols.lwm2m.listener import open_listener

    health = RecordingHealth()
    with capture_logs() as logs:
        async with open_listener(db, "::", 0, sweep_interval_s=0.05, expiry_grace=timedelta(0),
                                 health=health) as listener:
            registrations = listener.server.registrations
            expire = registrations.expire
            calls = 0

            async def trips_once(grace):
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("a bug in the sweep")
                return await expire(grace)

            registrations.expire = trips_once
            for _ in range(400):
                if calls >= 3:
                    break
                await asyncio.sleep(0.05)
    sweep = [problem for component, problem in health.history if component == "registration-sweep"]
    assert sweep[:3] == [None, "crashed (RuntimeError); restarting in 0.5 s", None]
    assert calls >= 3  # it runs again after the restart
    crashes = [e for e in logs if e["event"] == "component crashed"]
    assert len(crashes) == 1 and crashes[0]["component"] == "registration-sweep"


def test_a_success_right_after_the_loss_does_not_count_as_back():
    health = Health(settle_s=60)
    health.database_lost(ConnectionRefusedError())
    health.database_back()  # a statement finishing on a connection whose server is dying
    assert not health.database_ok
