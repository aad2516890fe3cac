"""What each `fleet` subcommand does, on top of the runtime and the domain services."""

from __future__ import annotations

import sys

import structlog

from api.runtime import open_database, run_http, until_stopped
from fleet.access.models import Role
from fleet.access.service import ApiKeyService, TenantService, system_principal
from fleet.db.migrate import migrate
from fleet.errors import FleetError
from fleet.settings import Settings

log = structlog.get_logger(__name__)


def _fail(exc: FleetError) -> int:
    print(f"error: {exc.detail}", file=sys.stderr)
    for e in exc.errors:
        print(f"  {e.field}: {e.message}", file=sys.stderr)
    return 1


async def migrate_only(settings: Settings) -> int:
    async with open_database(settings, run_migrations=False) as db:
        async with db.pool.acquire() as conn:
            applied = await migrate(conn)
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else "; schema is current"))
    return 0


async def tenant_create(settings: Settings, slug: str, name: str, timezone: str) -> int:
    async with open_database(settings) as db:
        try:
            tenant = await TenantService(db).create(slug, name, timezone)
        except FleetError as exc:
            return _fail(exc)
    print(f"created tenant {tenant.slug} ({tenant.name}, {tenant.timezone}) id={tenant.id}")
    return 0


async def tenant_list(settings: Settings) -> int:
    async with open_database(settings) as db:
        for tenant in await TenantService(db).all():
            print(f"{tenant.slug}\t{tenant.name}\t{tenant.timezone}\t{tenant.id}")
    return 0


async def apikey_create(settings: Settings, slug: str, role: str, name: str) -> int:
    async with open_database(settings) as db:
        try:
            tenant = await TenantService(db).by_slug(slug)
            issued = await ApiKeyService(db).issue(system_principal(tenant), Role(role), name)
        except FleetError as exc:
            return _fail(exc)
    print(f"{role} key for {tenant.slug} (id {issued.key.id}); it is shown only once:")
    print(issued.secret)
    return 0


async def serve(settings: Settings) -> int:
    async with open_database(settings) as db:
        log.info("fleet serving", http=f"http://{settings.http.host}:{settings.http.port}",
                 docs=f"http://{settings.http.host}:{settings.http.port}/schema")
        await until_stopped(lambda: run_http(db, settings, settings.http.host, settings.http.port))
    return 0


async def demo(settings: Settings) -> int:
    from simulators.seed import seed_demo_city

    async with open_database(settings) as db:
        city, key, created = await seed_demo_city(db)
        base = f"http://{settings.http.host}:{settings.http.port}"
        print(f"\nFleet demo: {city.name} ({city.slug}), {created} devices seeded this run")
        print(f"  API docs:  {base}/schema")
        print(f"  Admin key: {key}")
        print(f"  Try:       curl -H 'Authorization: Bearer {key}' '{base}/api/v1/devices?kind=streetlight&limit=5'")
        print("Press Ctrl-C to stop.\n", flush=True)
        await until_stopped(lambda: run_http(db, settings, settings.http.host, settings.http.port))
    return 0
