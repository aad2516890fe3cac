"""The console's operator commands in-process (`api.cli.main`): version, help on every option,
bad settings, cities and keys listed with a header, a key revoked on every node, and `fleet doctor`
on a healthy and on a broken deployment."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from importlib import metadata
from pathlib import Path

import asyncpg
import httpx
import pytest

from api import cli
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from protocols.lwm2m.listener import open_listener
from tests.conftest import TEST_CREDENTIALS_KEY, TEST_SECURITY, free_port, make_city

ROOT = Path(__file__).resolve().parents[2]
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


@pytest.fixture(autouse=True)
def console(monkeypatch):
    """The commands' own output only: logging stays as the suite has it (main() would point it
    at this test's captured stderr for good)."""
    monkeypatch.setattr(cli, "configure_logging", lambda settings: None)
    for name in [name for name in os.environ if name.startswith("FLEET_") and name != "FLEET_TEST_DATABASE_URL"]:
        monkeypatch.delenv(name)


async def fleet(*argv: str) -> int:
    # main() runs its own event loop, so not on the test's.
    return await asyncio.to_thread(cli.main, list(argv))


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"fleet {metadata.version('fleet')}\n"


def _options(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_of_every_subcommand_has_help():
    options = list(_options(cli._parser(), "fleet"))
    assert len(options) >= 45
    missing = [f"{path} {'/'.join(action.option_strings) or action.dest}" for path, action in options
               if not (action.help or "").strip()]
    assert missing == []
    assert {path for path, _ in options} >= {"fleet apikey list", "fleet apikey revoke", "fleet doctor"}


@pytest.mark.parametrize(("variable", "value"), [
    ("FLEET_HTTP_PORT", "abc"),
    ("FLEET_COAP_PORT", "70000"),
    ("FLEET_LOG_FORMAT", "xml"),
    ("FLEET_LOG_LEVEL", "chatty"),
    ("FLEET_DATABASE_URL", "mysql://root:s3cret@db/fleet"),
])
def test_a_bad_setting_is_one_line_naming_it(monkeypatch, capsys, variable, value):
    monkeypatch.setenv(variable, value)
    assert cli.main(["tenant", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fleet: {variable} must be "), err
    assert "s3cret" not in err


async def test_an_unreachable_database_is_one_line():
    """The one subprocess: what an operator sees, with nothing in between."""
    env = {**os.environ, "FLEET_DATABASE_URL": f"postgresql://fleet:s3cret@127.0.0.1:{free_port()}/fleet"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.cli", "tenant", "list", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    err = stderr.decode()
    assert process.returncode == 1 and stdout == b""
    assert err.count("\n") == 1 and err.startswith("fleet: cannot connect to the database fleet@127.0.0.1:"), err
    assert "s3cret" not in err and "Traceback" not in err


def _printed(output: str) -> list[str]:
    """The command's lines, without the in-process server's log lines (structlog's default
    configuration prints them to stdout too)."""
    return [line for line in output.splitlines() if not LOG_LINE.match(line)]


def _columns(output: str) -> tuple[str, list[str]]:
    header, *rows = _printed(output)
    return header, rows


async def test_tenant_list_has_a_header_and_aligned_columns(db, database_dsn, monkeypatch, capsys):
    monkeypatch.setenv("FLEET_DATABASE_URL", database_dsn)
    seoul = await make_city(db, "seoul")
    await make_city(db, "gangneung-si", timezone="Asia/Seoul")
    await DeviceService(db).create_validated(
        seoul.principal, NewDevice(DeviceKind.STREETLIGHT, "sl-1", 37.5, 126.9, serial="S1"))
    assert await fleet("tenant", "list") == 0
    header, rows = _columns(capsys.readouterr().out)
    assert header.split() == ["SLUG", "NAME", "TIMEZONE", "DEVICES", "CREATED", "(UTC)"]
    assert [row.split()[:4] for row in rows] == [["gangneung-si", "Gangneung-Si", "Asia/Seoul", "0"],
                                                 ["seoul", "Seoul", "Asia/Seoul", "1"]]
    for column in ("NAME", "TIMEZONE", "DEVICES"):
        start = header.index(column)
        assert all(row[start - 2:start] == "  " and row[start] != " " for row in rows), (column, rows)


async def test_apikey_list_then_revoke_reaches_the_serving_node(db, database_dsn, api_url, monkeypatch, capsys):
    monkeypatch.setenv("FLEET_DATABASE_URL", database_dsn)
    seoul = await make_city(db, "seoul")
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {seoul.key}"}) as client:
        assert (await client.get("/api/v1/tenant")).status_code == 200   # now in the node's key cache
        assert await fleet("apikey", "list", "--tenant", "seoul") == 0
        header, rows = _columns(capsys.readouterr().out)
        assert header.split()[:5] == ["ID", "PREFIX", "NAME", "ROLE", "CREW"] and "REVOKED" in header
        assert len(rows) == 1 and str(seoul.principal.api_key_id) in rows[0] and rows[0].rstrip().endswith("no")
        assert seoul.key not in rows[0] and seoul.key.split("_")[2][:8] not in rows[0]
        prefix = "_".join(seoul.key.split("_")[:2])
        assert prefix in rows[0] and " admin " in rows[0]

        assert await fleet("apikey", "revoke", "--tenant", "seoul", prefix) == 0
        assert f"revoked admin key {seoul.principal.api_key_id}" in capsys.readouterr().out
        # The node hears of it through the revocation channel, not after its cache's TTL.
        for _ in range(200):
            if (status := (await client.get("/api/v1/tenant")).status_code) == 401:
                break
            await asyncio.sleep(0.01)
        assert status == 401
    async with db.system_tx() as conn:
        audited = await conn.fetch("select actor, entity_id from audit_log where action = 'apikey.revoke'")
    assert [(r["actor"], r["entity_id"]) for r in audited] == [("system", str(seoul.principal.api_key_id))]

    assert await fleet("apikey", "revoke", "--tenant", "seoul", str(seoul.principal.api_key_id)) == 0
    assert "already revoked" in capsys.readouterr().out
    assert await fleet("apikey", "revoke", "--tenant", "seoul", "fleet_00000000") == 1
    assert await fleet("apikey", "list", "--tenant", "atlantis") == 1
    err = capsys.readouterr().err
    assert "no API key 'fleet_00000000'" in err and "tenant 'atlantis' not found" in err


async def test_doctor_on_a_healthy_node(db, database_dsn, api_url, monkeypatch, capsys):
    monkeypatch.setenv("FLEET_DATABASE_URL", database_dsn)
    monkeypatch.setenv("FLEET_CREDENTIALS_KEY", TEST_CREDENTIALS_KEY)   # unset: a warning
    async with open_listener(db, "::", 0, coaps_port=0, security=TEST_SECURITY) as listener:
        code = await fleet("doctor", "--host", "127.0.0.1", "--http-port", api_url.rpartition(":")[2],
                           "--coap-port", str(listener.port), "--coaps-port", str(listener.coaps_port))
    out = capsys.readouterr().out
    assert code == 0, out
    checks = {line.split()[1]: line.split()[0] for line in _printed(out)}
    assert checks == dict.fromkeys(("database", "roles", "row-security", "migrations", "clock", "credentials",
                                    "coap", "coaps", "http"), "ok"), out
    assert f"127.0.0.1:{listener.coaps_port} answers a DTLS ClientHello" in out
    assert "PostgreSQL" in out and "->" not in out


async def test_doctor_skips_the_side_a_node_leaves_off(db, database_dsn, api_url, monkeypatch, capsys):
    monkeypatch.setenv("FLEET_DATABASE_URL", database_dsn)
    monkeypatch.setenv("FLEET_CREDENTIALS_KEY", TEST_CREDENTIALS_KEY)
    # An API-only node (`fleet serve --coap-workers 0`): nothing listens for devices, and that is fine.
    code = await fleet("doctor", "--host", "127.0.0.1", "--http-port", api_url.rpartition(":")[2],
                       "--coap-port", str(free_port()), "--coap-workers", "0")
    out = capsys.readouterr().out
    assert code == 0, out
    names = [line.split()[1] for line in _printed(out)]
    assert names[-1] == "http" and "coap" not in names and "coaps" not in names
    # A device-only node (FLEET_HTTP_WORKERS=0): no /readyz to ask.
    monkeypatch.setenv("FLEET_HTTP_WORKERS", "0")
    code = await fleet("doctor", "--host", "127.0.0.1", "--coap-port", str(free_port()), "--coaps-port", "0")
    lines = {line.split()[1]: line for line in _printed(capsys.readouterr().out)}
    assert code == 1 and "http" not in lines and lines["coap"].startswith("FAIL")
    assert "--coap-workers 0 when its node has no device edge" in lines["coap"]


async def test_doctor_names_what_is_broken_and_the_fix(database_dsn, monkeypatch, capsys):
    conn = await asyncpg.connect(database_dsn)
    try:
        await conn.execute("alter table devices no force row level security")
        await conn.execute("delete from schema_migrations where version = (select max(version) from schema_migrations)")
    finally:
        await conn.close()
    monkeypatch.setenv("FLEET_DATABASE_URL", database_dsn)
    monkeypatch.setenv("FLEET_CREDENTIALS_KEY", TEST_CREDENTIALS_KEY)
    coaps_port = free_port()
    code = await fleet("doctor", "--host", "127.0.0.1", "--http-port", str(free_port()),
                       "--coap-port", str(free_port()), "--coaps-port", str(coaps_port))
    out = capsys.readouterr().out
    assert code == 1
    lines = {line.split()[1]: line for line in _printed(out)}
    assert lines["row-security"].startswith("FAIL") and "devices: not forced" in lines["row-security"]
    assert "-> " in lines["row-security"] and "force row level security" in lines["row-security"]
    assert lines["migrations"].startswith("FAIL") and "1 pending" in lines["migrations"]
    assert "fleet migrate" in lines["migrations"]
    assert lines["roles"].startswith("ok") and lines["clock"].startswith("ok")
    assert lines["coap"].startswith("FAIL") and "--no-node" in lines["coap"]
    assert lines["coaps"].startswith("FAIL") and f":{coaps_port}: no answer to a DTLS ClientHello" in lines["coaps"]
    assert lines["http"].startswith("FAIL")


async def test_doctor_when_the_database_is_away(monkeypatch, capsys):
    monkeypatch.setenv("FLEET_DATABASE_URL", f"postgresql://fleet:s3cret@127.0.0.1:{free_port()}/fleet")
    assert await fleet("doctor", "--no-node") == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL  database") and out.count("\n") == 1 and "s3cret" not in out
    assert "FLEET_DATABASE_URL" in out


async def test_doctor_creates_no_embedded_database(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path / "typo"))
    assert await fleet("doctor", "--no-node") == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL  database") and "no embedded PostgreSQL in" in out and "FLEET_DATA_DIR" in out
    assert not (tmp_path / "typo").exists()


async def test_key_and_city_lists_create_no_embedded_database(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path / "typo"))
    assert await fleet("apikey", "list", "--tenant", "seoul") == 1
    assert await fleet("tenant", "list") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("fleet apikey: no embedded PostgreSQL in") and "FLEET_DATA_DIR" in err[0]
    assert err[1].startswith("fleet tenant: no embedded PostgreSQL in") and len(err) == 2
    assert not (tmp_path / "typo").exists()
