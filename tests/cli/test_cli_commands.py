"""The `fleet` console command as operators run it: a subprocess against a real database."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[2]
KEY_PATTERN = re.compile(r"^fleet_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


async def fleet(dsn: str, *args: str) -> Result:
    env = {**os.environ, "FLEET_DATABASE_URL": dsn, "FLEET_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return Result(process.returncode, stdout.decode(), stderr.decode())


async def test_migrate_is_idempotent(empty_database_dsn):
    first = await fleet(empty_database_dsn, "migrate")
    assert first.code == 0, first.stderr
    assert re.search(r"applied [1-9]\d* migration\(s\): \[1[,\]]", first.stdout), first.stdout
    again = await fleet(empty_database_dsn, "migrate")
    assert again.code == 0, again.stderr
    assert again.stdout.strip() == "applied 0 migration(s); schema is current"


async def test_tenant_create_and_its_refusals(database_dsn):
    created = await fleet(database_dsn, "tenant", "create", "seoul", "--name", "Seoul", "--timezone", "Asia/Seoul")
    assert created.code == 0, created.stderr
    assert "seoul" in created.stdout and "Asia/Seoul" in created.stdout
    assert "devices must use DTLS" in created.stdout   # a new city refuses NoSec devices
    assert "PUT /api/v1/devices/{id}/security" in created.stdout  # ... and says how to give them keys
    if "FLEET_CREDENTIALS_KEY" not in os.environ:
        assert "FLEET_CREDENTIALS_KEY is not set here" in created.stdout
    duplicate = await fleet(database_dsn, "tenant", "create", "seoul", "--name", "Seoul again",
                            "--timezone", "Asia/Seoul")
    assert duplicate.code != 0
    assert "error: tenant 'seoul' already exists" in duplicate.stderr
    refusals = ((["busan", "--name", "Busan", "--timezone", "Asia/Busan"], "timezone"),
                (["busan", "--name", "Busan", "--timezone", "../../etc/passwd"], "timezone"),
                (["Busan!", "--name", "Busan", "--timezone", "Asia/Seoul"], "slug"),
                (["busan", "--name", " ", "--timezone", "Asia/Seoul"], "name"))
    results = await asyncio.gather(*(fleet(database_dsn, "tenant", "create", *args) for args, _ in refusals))
    for (args, field), refused in zip(refusals, results, strict=True):
        assert refused.code != 0, args
        assert "error:" in refused.stderr and f"{field}:" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    listed = await fleet(database_dsn, "tenant", "list")
    assert listed.code == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == ["SLUG", "seoul"]
    lenient = await fleet(database_dsn, "tenant", "create", "incheon", "--name", "Incheon", "--timezone",
                          "Asia/Seoul", "--allow-nosec")
    assert lenient.code == 0 and "devices may register without DTLS" in lenient.stdout, lenient.stderr
    conn = await asyncpg.connect(database_dsn)
    try:
        assert dict(await conn.fetch("select slug, allow_nosec_devices from tenants")) == {
            "seoul": False, "incheon": True}
    finally:
        await conn.close()


async def test_apikey_create_prints_a_working_key_last(database_dsn, api_url):
    assert (await fleet(database_dsn, "tenant", "create", "seoul", "--name", "Seoul",
                        "--timezone", "Asia/Seoul")).code == 0
    roles = ("admin", "operator", "crew", "viewer")
    issued = await asyncio.gather(*(fleet(database_dsn, "apikey", "create", "--tenant", "seoul",
                                          "--role", role, "--name", f"{role} console") for role in roles))
    for role, result in zip(roles, issued, strict=True):
        assert result.code == 0, result.stderr
        key = result.stdout.rstrip("\n").splitlines()[-1]
        assert KEY_PATTERN.match(key), result.stdout
        async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as client:
            tenant = await client.get("/api/v1/tenant")
            assert tenant.status_code == 200 and tenant.json()["slug"] == "seoul"
            create = await client.post("/api/v1/devices", json={
                "kind": "streetlight", "endpoint": f"sl-{role}", "location": {"lat": 37.5, "lon": 126.9}})
            assert create.status_code == (201 if role in ("admin", "operator") else 403), role
            keys = await client.get("/api/v1/apikeys")
            assert keys.status_code == (200 if role == "admin" else 403), role
            if role == "admin":
                assert sorted((k["role"], k["name"]) for k in keys.json()) == sorted(
                    (r, f"{r} console") for r in roles)


async def test_apikey_create_refusals(database_dsn):
    unknown = await fleet(database_dsn, "apikey", "create", "--tenant", "atlantis", "--role", "admin")
    assert unknown.code != 0 and "tenant 'atlantis' not found" in unknown.stderr
    assert not KEY_PATTERN.match(unknown.stdout.strip().splitlines()[-1] if unknown.stdout.strip() else "")
    bad_role = await fleet(database_dsn, "apikey", "create", "--tenant", "atlantis", "--role", "root")
    assert bad_role.code == 2 and "invalid choice" in bad_role.stderr


async def test_apikey_create_for_a_crew_and_for_a_reporting_app(db, database_dsn, api_url):
    from fleet.access.service import TenantService, system_principal
    from fleet.crews.service import CrewService

    assert (await fleet(database_dsn, "tenant", "create", "seoul", "--name", "Seoul",
                        "--timezone", "Asia/Seoul")).code == 0
    tenant = await TenantService(db).by_slug("seoul")
    crew = await CrewService(db).create(system_principal(tenant), "North team")
    made = await fleet(database_dsn, "apikey", "create", "--tenant", "seoul", "--role", "crew", "--crew", "North team")
    assert made.code == 0, made.stderr
    key = made.stdout.rstrip("\n").splitlines()[-1]
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as client:
        mine = await client.get("/api/v1/workorders", params={"assigned_to": "me"})
        assert mine.status_code == 200 and mine.json()["items"] == []
        keys = await client.get("/api/v1/apikeys")
        assert keys.status_code == 403
    unknown = await fleet(database_dsn, "apikey", "create", "--tenant", "seoul", "--role", "crew", "--crew", "Nobody")
    assert unknown.code != 0 and "crew 'Nobody' not found" in unknown.stderr and "Traceback" not in unknown.stderr
    wrong_role = await fleet(database_dsn, "apikey", "create", "--tenant", "seoul", "--role", "operator",
                             "--crew", "North team")
    assert wrong_role.code != 0 and "--crew" in wrong_role.stderr
    reporter = await fleet(database_dsn, "apikey", "create", "--tenant", "seoul", "--role", "reporter")
    assert reporter.code == 0, reporter.stderr
    key = reporter.stdout.rstrip("\n").splitlines()[-1]
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as client:
        assert (await client.get("/api/v1/workorders")).status_code == 403
    assert crew.name == "North team"
