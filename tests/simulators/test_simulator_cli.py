"""`fleet simulate` as a user runs it: its own process, provisioning over REST, a summary."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

FLEET = [sys.executable, "-m", "api.cli"]


async def fleet(*args: str, timeout_s: float = 60, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *FLEET, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=os.environ | {"FLEET_LOG_FORMAT": "json"} | (env or {}))
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    return process.returncode, out.decode(), err.decode()


async def test_simulate_provisions_runs_and_summarises(db, listener, seoul, api_url):
    code, out, err = await fleet(
        "simulate", "--streetlights", "2", "--bins", "1", "--aps", "1", "--provision",
        "--server", f"coap://127.0.0.1:{listener.port}", "--api", api_url,
        "--speed", "60", "--start", "2026-11-24T19:00", "--duration", "3", "--progress", "1",
        env={"FLEET_SIMULATE_KEY": seoul.key})
    assert code == 0, err
    assert "warning" not in err
    assert "registered 4/4 online 4" in out
    assert "sim 2026-11-24 19:0" in out and "KST x60" in out
    assert "deregistered   4" in out and "sends " in out
    async with db.system_tx() as conn:
        statuses = [r["status"] for r in await conn.fetch("select status from devices")]
    assert sorted(statuses) == ["offline"] * 4


async def test_simulate_explains_bad_options():
    code, _out, err = await fleet("simulate", "--streetlights", "1", "--fault", "meteor=0.1")
    assert code == 2 and "unknown fault 'meteor'" in err
    code, _out, err = await fleet("simulate", "--streetlights", "1", env={"FLEET_SIMULATE_KEY": ""})
    assert code == 1 and "--api and a key (FLEET_SIMULATE_KEY or --key-file" in err


def _keys(argv: list[str], environ: dict[str, str]) -> tuple[str | None, str | None]:
    from api.cli import _parser
    from api.commands import simulate_key

    args = _parser().parse_args(["simulate", *argv])
    return (simulate_key(args.key, args.key_file, "FLEET_SIMULATE_KEY", "--key", environ),
            simulate_key(args.truck_key, args.truck_key_file, "FLEET_SIMULATE_TRUCK_KEY", "--truck-key", environ))


def test_simulate_takes_its_keys_from_the_environment_or_a_file(tmp_path, capsys):
    environ = {"FLEET_SIMULATE_KEY": "fleet_env_city", "FLEET_SIMULATE_TRUCK_KEY": "fleet_env_crew"}
    assert _keys([], environ) == ("fleet_env_city", "fleet_env_crew")
    assert _keys([], {}) == (None, None)
    city, crew = tmp_path / "city.key", tmp_path / "crew.key"
    city.write_text("fleet_file_city\n")
    crew.write_text("  fleet_file_crew  ")
    # A file named on the command line wins over the environment.
    assert _keys(["--key-file", str(city), "--truck-key-file", str(crew)], environ) == (
        "fleet_file_city", "fleet_file_crew")
    assert capsys.readouterr().err == ""

    # The old flags still work, each with a one-line warning that `ps` shows them.
    assert _keys(["--key", "fleet_arg_city", "--truck-key", "fleet_arg_crew"], environ) == (
        "fleet_arg_city", "fleet_arg_crew")
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2 and all("visible to every user of this machine (ps)" in w for w in warnings)
    assert "FLEET_SIMULATE_KEY or --key-file" in warnings[0]

    (tmp_path / "empty.key").write_text("\n")
    for argv, message in ((["--key-file", str(tmp_path / "missing.key")], "cannot read --key-file"),
                          (["--key-file", str(tmp_path / "empty.key")], "must hold the key alone")):
        with pytest.raises(ValueError, match=message):
            _keys(argv, {})
    with pytest.raises(SystemExit):  # one or the other
        _keys(["--key", "a", "--key-file", str(city)], {})


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


def test_the_demo_gives_its_simulator_the_keys_in_the_environment_only():
    from api.commands import demo_devices_command
    from fleet.settings import load_settings

    counts = {"streetlight": 3, "waste_bin": 2, "wifi_ap": 1}
    args, env = demo_devices_command(load_settings(), "fleet_admin_secret", counts, "fleet_crew_secret",
                                     environ={"PATH": "/bin", "FLEET_SIMULATE_TRUCK_KEY": "someone_elses"})
    assert not [arg for arg in args if "secret" in arg]  # `ps` shows every argument to every user
    assert env["FLEET_SIMULATE_KEY"] == "fleet_admin_secret" and env["FLEET_SIMULATE_TRUCK_KEY"] == "fleet_crew_secret"
    assert env["PATH"] == "/bin" and args[args.index("--collection") + 1] == "fleet"
    _, without_crew = demo_devices_command(load_settings(), "fleet_admin_secret", counts, None,
                                           environ={"FLEET_SIMULATE_TRUCK_KEY": "someone_elses"})
    assert "FLEET_SIMULATE_TRUCK_KEY" not in without_crew
