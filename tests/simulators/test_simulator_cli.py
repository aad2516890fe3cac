"""`fleet simulate` as a user runs it: its own process, provisioning over REST, a summary."""

from __future__ import annotations

import asyncio
import os
import sys

FLEET = [sys.executable, "-m", "api.cli"]


async def fleet(*args: str, timeout_s: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *FLEET, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=os.environ | {"FLEET_LOG_FORMAT": "json"})
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    return process.returncode, out.decode(), err.decode()


async def test_simulate_provisions_runs_and_summarises(db, listener, seoul, api_url):
    code, out, err = await fleet(
        "simulate", "--streetlights", "2", "--bins", "1", "--aps", "1", "--provision",
        "--server", f"coap://127.0.0.1:{listener.port}", "--api", api_url, "--key", seoul.key,
        "--speed", "60", "--start", "2026-11-24T19:00", "--duration", "3", "--progress", "1")
    assert code == 0, err
    assert "registered 4/4 online 4" in out
    assert "sim 2026-11-24 19:0" in out and "KST x60" in out
    assert "deregistered   4" in out and "sends " in out
    async with db.system_tx() as conn:
        statuses = [r["status"] for r in await conn.fetch("select status from devices")]
    assert sorted(statuses) == ["offline"] * 4


async def test_simulate_explains_bad_options():
    code, _out, err = await fleet("simulate", "--streetlights", "1", "--fault", "meteor=0.1")
    assert code == 2 and "unknown fault 'meteor'" in err
    code, _out, err = await fleet("simulate", "--streetlights", "1")
    assert code == 1 and "--api and --key" in err


def test_the_simulators_libraries_keep_their_routine_to_themselves():
    import logging

    from api.commands import quiet_simulator_libraries

    levels = {name: logging.getLogger(name).level for name in ("httpx", "coap")}
    try:
        quiet_simulator_libraries()
        assert not logging.getLogger("coap").isEnabledFor(logging.INFO)
        assert logging.getLogger("coap").isEnabledFor(logging.WARNING)
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
