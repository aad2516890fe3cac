"""Liveness and readiness probes."""

from __future__ import annotations

from litestar import Request, Response, get

from api.openapi import PublicOperation
from api.problems import problem, problems
from fleet.db import Database
from fleet.db.migrate import pending_migrations


@get("/healthz", summary="The process is up", tags=["health"], operation_class=PublicOperation)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="The database is reachable and migrations are current", tags=["health"],
     operation_class=PublicOperation, responses=problems(503))
async def readyz(request: Request, db: Database) -> Response:
    try:
        async with db.pool.acquire(timeout=2) as conn:
            pending = await pending_migrations(conn)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database means not ready
        return problem(request, 503, "Service Unavailable", f"database unreachable: {type(exc).__name__}")
    if pending:
        return problem(request, 503, "Service Unavailable",
                       f"{len(pending)} migration(s) pending: {[m.version for m in pending]}")
    return Response({"status": "ready"})
