"""Liveness and readiness probes; readiness names the components that are unhealthy."""

from __future__ import annotations

from litestar import Request, Response, get

from api.openapi import PublicOperation
from api.problems import problem, problems
from fleet.db import Database
from fleet.db.migrate import pending_migrations
from fleet.supervision import DATABASE, Health


@get("/healthz", summary="The process is up", tags=["health"], operation_class=PublicOperation)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="The database is reachable, migrations are current and every component is healthy",
     tags=["health"], operation_class=PublicOperation, responses=problems(503))
async def readyz(request: Request, db: Database, health: Health) -> Response:
    components = health.components()
    try:
        async with db.pool.acquire(timeout=2) as conn:
            pending = await pending_migrations(conn)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database means not ready
        components[DATABASE] = f"unreachable: {type(exc).__name__}"
        return _not_ready(request, f"database unreachable: {type(exc).__name__}", components)
    if pending:
        return _not_ready(request, f"{len(pending)} migration(s) pending: {[m.version for m in pending]}",
                          components)
    unhealthy = [name for name, state in components.items() if state != "ok"]
    if unhealthy:
        return _not_ready(request, f"unhealthy: {', '.join(unhealthy)}", components)
    return Response({"status": "ready", "components": components})


def _not_ready(request: Request, detail: str, components: dict[str, str]) -> Response:
    response = problem(request, 503, "Service Unavailable", detail)
    response.content["components"] = components
    return response
