"""Liveness and readiness probes over real HTTP, against migrated, half-migrated and empty databases."""

from __future__ import annotations

import asyncpg
import httpx

from fleet.db import Database
from fleet.db.migrate import available_migrations
from tests.conftest import serve_api


async def test_healthz_and_readyz_need_no_key(api_url):
    async with httpx.AsyncClient(base_url=api_url) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "components": {}}
        assert ready.headers["x-request-id"]


async def test_readyz_is_503_while_a_migration_is_pending(api_url, database_dsn):
    latest = available_migrations()[-1]
    # Only the admin may touch the migration ledger; the service's logins can't.
    admin = await asyncpg.connect(database_dsn)
    try:
        await admin.execute("delete from schema_migrations where version = $1", latest.version)
    finally:
        await admin.close()
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["status"] == 503 and str(latest.version) in problem["detail"]
        # Liveness does not depend on the schema.
        assert (await client.get("/healthz")).status_code == 200


async def test_readyz_is_503_on_an_empty_database(empty_database_dsn):
    db = await Database.connect(empty_database_dsn, min_size=1, max_size=2)
    try:
        async with serve_api(db) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert f"{len(available_migrations())} migration(s) pending" in response.json()["detail"]
    finally:
        await db.close()


async def test_readyz_is_503_when_the_database_is_gone(database_dsn):
    db = await Database.connect(database_dsn, min_size=1, max_size=2)
    async with serve_api(db) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/readyz")).status_code == 200
        await db.close()
        response = await client.get("/readyz")
        assert response.status_code == 503 and "unreachable" in response.json()["detail"]
        assert (await client.get("/healthz")).status_code == 200


async def test_requests_get_503_with_retry_after_while_the_database_is_gone(database_dsn, city_factory):
    seoul = await city_factory("seoul")  # its key is cached for a few seconds: the request reaches a query
    db = await Database.connect(database_dsn, min_size=1, max_size=2)
    async with serve_api(db) as url, httpx.AsyncClient(base_url=url, headers=seoul.client.headers) as client:
        assert (await client.get("/api/v1/devices")).status_code == 200
        await db.close()
        response = await client.get("/api/v1/devices")
        assert response.status_code == 503 and response.headers["retry-after"] == "10"
        assert response.headers["content-type"].startswith("application/problem+json")
