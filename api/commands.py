"""What each `fleet` subcommand does, on top of the runtime and the domain services."""

from __future__ import annotations

import asyncio
import sys

import structlog

from api.runtime import migrate_database, open_database, resolve_dsn, run_http, supervised, until_stopped
from protocols.lwm2m.listener import run_coap
from fleet.scheduling.lighting import run_scheduler
from fleet.access.models import Role
from fleet.access.service import ApiKeyService, TenantService, system_principal
from fleet.errors import FleetError
from fleet.settings import Settings
from fleet.supervision import Health

log = structlog.get_logger(__name__)


def _fail(exc: FleetError) -> int:
    print(f"error: {exc.detail}", file=sys.stderr)
    for e in exc.errors:
        print(f"  {e.field}: {e.message}", file=sys.stderr)
    return 1


async def migrate_only(settings: Settings) -> int:
    dsn = await asyncio.to_thread(resolve_dsn, settings)
    applied = await migrate_database(dsn, settings)
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
    health = Health()  # what /readyz reports: every component of this process
    async with open_database(settings, health=health) as db:
        log.info("fleet serving", http=f"http://{settings.http.host}:{settings.http.port}",
                 docs=f"http://{settings.http.host}:{settings.http.port}/schema",
                 coap=f"udp/{settings.coap.port}")
        return await until_stopped(
            lambda: run_http(db, settings, settings.http.host, settings.http.port, health),
            lambda: run_coap(db, settings.coap.host, settings.coap.port, in_flight=settings.coap.in_flight,
                             peer_rate=settings.coap.peer_rate, address_rate=settings.coap.address_rate,
                             health=health),
            lambda: supervised(health, "scheduler", lambda: run_scheduler(
                db, events_retention_days=settings.events.retention_days)))


async def coap_only(settings: Settings) -> int:
    health = Health()
    async with open_database(settings, health=health) as db:
        return await until_stopped(lambda: run_coap(db, settings.coap.host, settings.coap.port,
                                                    in_flight=settings.coap.in_flight,
                                                    peer_rate=settings.coap.peer_rate,
                                                    address_rate=settings.coap.address_rate, health=health))


async def demo(settings: Settings) -> int:
    from simulators.seed import DEMO_COUNTS, seed_demo_city

    health = Health()
    async with open_database(settings, health=health) as db:
        city, key, created = await seed_demo_city(db)
        base = f"http://{settings.http.host}:{settings.http.port}"
        print(f"\nFleet demo: {city.name} ({city.slug}), {created} devices seeded this run")
        print(f"  API docs:  {base}/schema")
        print(f"  Admin key: {key}")
        print(f"  Try:       curl -H 'Authorization: Bearer {key}' '{base}/api/v1/devices?kind=streetlight&limit=5'")
        print(f"  Devices:   simulated in a separate process (`fleet simulate`), reporting over CoAP "
              f"to udp/{settings.coap.port}")
        print("Press Ctrl-C to stop.\n", flush=True)
        return await until_stopped(
            lambda: run_http(db, settings, settings.http.host, settings.http.port, health),
            lambda: run_coap(db, settings.coap.host, settings.coap.port, in_flight=settings.coap.in_flight,
                             peer_rate=settings.coap.peer_rate, address_rate=settings.coap.address_rate,
                             health=health),
            lambda: supervised(health, "scheduler", lambda: run_scheduler(
                db, events_retention_days=settings.events.retention_days)),
            lambda: run_demo_devices(settings, key, DEMO_COUNTS))


async def run_demo_devices(settings: Settings, key: str, counts: dict[str, int]) -> None:
    """The demo's devices: `fleet simulate` in its own process, so they reach Fleet only over
    the wire, exactly like street furniture would."""
    import asyncio

    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::") else settings.http.host
    api = f"http://{host}:{settings.http.port}"
    args = [sys.executable, "-m", "api.cli", "simulate", "--server", f"coap://127.0.0.1:{settings.coap.port}",
            "--api", api, "--key", key, "--streetlights", str(counts["streetlight"]),
            "--bins", str(counts["waste_bin"]), "--aps", str(counts["wifi_ap"]),
            # A lively demo: a simulated quarter hour between reports passes in 15 s.
            "--speed", "60", "--progress", "60"]
    await asyncio.sleep(2)  # let the API and the listener come up first
    process = await asyncio.create_subprocess_exec(*args)
    try:
        await process.wait()
        log.warning("demo devices stopped", returncode=process.returncode)
        await asyncio.Event().wait()  # the rest of the demo keeps running
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()


async def simulate(args) -> int:
    """`fleet simulate`: simulated devices talking to a Fleet server over the wire only."""
    import logging
    from datetime import datetime
    from pathlib import Path

    from simulators.faults import FaultPlan
    from simulators.rest import ApiError
    from simulators.simulation import Simulation, SimulationConfig, SimulationError

    try:
        config = SimulationConfig(
            counts={"streetlight": args.streetlights, "waste_bin": args.bins, "wifi_ap": args.aps},
            server=args.server, api=args.api, key=args.key, provision=args.provision,
            devices_file=Path(args.devices_file) if args.devices_file else None, seed=args.seed,
            speed=args.speed, duration_s=args.duration,
            start=datetime.fromisoformat(args.start) if args.start else None,
            lifetime_s=args.lifetime, report_interval_s=args.report_interval,
            register_rate=args.register_rate, faults=FaultPlan.parse(args.fault, args.faults),
            progress_s=args.progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call is noise here
    try:
        await Simulation(config).run(handle_signals=True)
    except (SimulationError, ApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
