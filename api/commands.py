"""What each `fleet` subcommand does, on top of the runtime and the domain services."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import sys
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import structlog

from api.runtime import (alarm_service, bind_problem, coaps_public_uri, firmware_download_uri, migrate_database,
                         open_database, resolve_dsn, run_device_edge, serving_metrics, supervised,
                         until_stopped)
from fleet.scheduling.lighting import run_scheduler
from fleet.access.models import ApiKey, Role
from fleet.access.service import KEY_SCHEME, ApiKeyService, TenantService, system_principal
from fleet.crews.service import CrewService
from fleet.logging import set_worker
from fleet.errors import FleetError
from fleet.settings import SecuritySettings, Settings
from fleet.supervision import Health

if TYPE_CHECKING:
    from fleet.db import Database
    from simulators.seed import DemoCity

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


async def tenant_create(settings: Settings, slug: str, name: str, timezone: str, allow_nosec: bool = False) -> int:
    async with open_database(settings) as db:
        try:
            tenant = await TenantService(db).create(slug, name, timezone, allow_nosec_devices=allow_nosec)
        except FleetError as exc:
            return _fail(exc)
    devices = "devices may register without DTLS" if allow_nosec else (
        "devices must use DTLS (coaps): give each its key with PUT /api/v1/devices/{id}/security or the "
        "registry CSV's security columns")
    print(f"created tenant {tenant.slug} ({tenant.name}, {tenant.timezone}) id={tenant.id}; {devices}")
    if not allow_nosec and settings.security.credentials_key is None:
        # A first-time operator otherwise learns it from a 500 on the first PSK it sets.
        print("note: FLEET_CREDENTIALS_KEY is not set here: a node needs it (the same on every node) to store "
              "device PSKs and open its coaps listener (docs/security.md, Device credentials)")
    return 0


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Columns aligned under a header line, two spaces apart, as `ps` or `kubectl get` print them."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in (header, *rows))


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


async def tenant_list(settings: Settings) -> int:
    async with open_database(settings) as db:
        service = TenantService(db)
        tenants, devices = await service.all(), await service.device_counts()
    print(table(("SLUG", "NAME", "TIMEZONE", "DEVICES", "CREATED (UTC)"),
                [(t.slug, t.name, t.timezone, str(devices.get(t.id, 0)), _when(t.created_at)) for t in tenants]))
    return 0


def _find_key(keys: list[ApiKey], id_or_prefix: str) -> ApiKey | str:
    """The key named by its id, its prefix (`1a2b3c4d`, `fleet_1a2b3c4d`) or a whole secret's
    visible start; otherwise what is wrong with the name."""
    try:
        key_id = UUID(id_or_prefix)
    except ValueError:
        prefix = id_or_prefix.removeprefix(f"{KEY_SCHEME}_").partition("_")[0]
        matches = [k for k in keys if k.prefix == prefix]
    else:
        matches = [k for k in keys if k.id == key_id]
    if not matches:
        return f"no API key {id_or_prefix!r} in this city (`fleet apikey list` shows them)"
    if len(matches) > 1:
        ids = ", ".join(str(k.id) for k in matches)
        return f"prefix {id_or_prefix!r} names {len(matches)} keys; give the id: {ids}"
    return matches[0]


async def apikey_list(settings: Settings, slug: str) -> int:
    async with open_database(settings) as db:
        try:
            principal = system_principal(await TenantService(db).by_slug(slug))
            keys = await ApiKeyService(db).list(principal)
            crews = {crew.id: crew.name for crew in await CrewService(db).list(principal)}
        except FleetError as exc:
            return _fail(exc)
    print(table(("ID", "PREFIX", "NAME", "ROLE", "CREW", "CREATED (UTC)", "LAST USED", "REVOKED"), [
        (str(k.id), f"{KEY_SCHEME}_{k.prefix}", k.name or "-", k.role.value,
         crews.get(k.crew_id, str(k.crew_id)) if k.crew_id else "-", _when(k.created_at),
         _when(k.last_used_at), _when(k.revoked_at) if k.revoked_at else "no") for k in keys]))
    return 0


async def apikey_revoke(settings: Settings, slug: str, id_or_prefix: str) -> int:
    async with open_database(settings) as db:
        try:
            principal = system_principal(await TenantService(db).by_slug(slug))
            service = ApiKeyService(db)
            key = _find_key(await service.list(principal), id_or_prefix)
            if isinstance(key, str):
                print(f"error: {key}", file=sys.stderr)
                return 1
            if key.revoked_at is not None:
                print(f"key {key.id} ({KEY_SCHEME}_{key.prefix}) was already revoked at {_when(key.revoked_at)} UTC")
                return 0
            # Through the service: audited, and every node hears of it (fleet.access.revocations).
            revoked = await service.revoke(principal, key.id)
        except FleetError as exc:
            return _fail(exc)
    print(f"revoked {revoked.role.value} key {revoked.id} ({KEY_SCHEME}_{revoked.prefix}"
          f"{', ' + repr(revoked.name) if revoked.name else ''}) of {slug}")
    return 0


async def apikey_create(settings: Settings, slug: str, role: str, name: str, crew: str | None = None) -> int:
    if crew is not None and role != Role.CREW:
        print("error: --crew goes only with --role crew", file=sys.stderr)
        return 2
    async with open_database(settings) as db:
        try:
            tenant = await TenantService(db).by_slug(slug)
            principal = system_principal(tenant)
            crew_id = (await CrewService(db).by_name(principal, crew)).id if crew is not None else None
            issued = await ApiKeyService(db).issue(principal, Role(role), name, crew_id)
        except FleetError as exc:
            return _fail(exc)
    of_crew = f", crew {crew!r}" if crew is not None else ""
    print(f"{role} key for {tenant.slug}{of_crew} (id {issued.key.id}); it is shown only once:")
    print(issued.secret)
    return 0


def coaps_listening(settings: Settings) -> str:
    """Where the coaps listener is, for the start line: the listener opens none without the key,
    and a line saying udp/5684 there sent operators looking for a port nothing listened on."""
    if not settings.coap.coaps_port:
        return "off"
    if settings.security.credentials_key is None:
        return "off (FLEET_CREDENTIALS_KEY is not set)"
    return f"udp/{settings.coap.coaps_port}"


async def serve(settings: Settings, *, coap_workers: int, http_workers: int) -> int:
    """A node: its supervisor and worker processes (api.node)."""
    from api.node import run_node

    return await run_node(settings, coap_workers=coap_workers, http_workers=http_workers)


async def scheduler(db: Database, settings: Settings, health: Health, *, node: str | None = None) -> None:
    """The scheduler component of a node, as a node's worker runs it (one per node; across
    nodes, the leader lock lets one lead)."""
    await supervised(health, "scheduler", lambda: run_scheduler(
        db, node=node, events_retention_days=settings.events.retention_days, alarm_service=alarm_service(db),
        download_base_uri=firmware_download_uri(settings), secure_download_base_uri=coaps_public_uri(settings),
        routing_url=settings.routing_url))


async def coap_only(settings: Settings) -> int:
    health = Health()
    async with open_database(settings, health=health) as db, serving_metrics(db, settings):
        return await until_stopped(lambda: run_device_edge(db, settings, health))


def local_api(settings: Settings) -> str:
    """Where a process on this machine reaches the API (a wildcard address is not a URL)."""
    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::") else settings.http.host
    return f"http://{host}:{settings.http.port}"


def metrics_url(settings: Settings) -> str | None:
    """Where Prometheus scrapes this process (None: metrics are off)."""
    metrics = settings.metrics
    return f"http://{metrics.host}:{metrics.port}/metrics" if metrics.port else None


def demo_banner(seeded: DemoCity, base: str, coap_port: int, coaps_port: int = 0) -> str:
    """What `fleet demo` prints: where the API is, its keys and what to try first. The commands
    use demo.env's variables, as the README's tour does, so both paste as they are."""
    admin, crew = seeded.admin_key, seeded.crew_key
    env = None
    if seeded.env_file is not None:
        env = (f"  Shell:     source {shlex.quote(str(seeded.env_file))}   (sets FLEET_URL, ADMIN_KEY, CREW_KEY, "
               "REPORTER_KEY and FLEET_DATA_DIR for the commands below and the README's tour)")
    return "\n".join(line for line in (
        f"\nFleet demo: {seeded.city.name} ({seeded.city.slug}), "
        + (f"{seeded.created} devices seeded this run" if seeded.created
           else "its devices from an earlier run (nothing new seeded)"),
        f"  Browser:   {base}/   (the control room; sign in with the admin key, or the crew key for the tablet view)",
        f"  API:       {base}/api/v1   (docs: {base}/schema)",
        f"  Admin key: {admin}" + ("   (the last run's)" if seeded.keys_reused else ""),
        f"  Crew key:  {crew}   ({seeded.crew_name})",
        env,
        '  Try:       curl -H "Authorization: Bearer $ADMIN_KEY" "$FLEET_URL/api/v1/alarms?status=active"',
        '  Crew:      curl -H "Authorization: Bearer $CREW_KEY" "$FLEET_URL/api/v1/workorders?assigned_to=me"',
        '  Live:      curl -N -H "Authorization: Bearer $ADMIN_KEY" "$FLEET_URL/api/v1/events"',
        f"  Devices:   simulated in a separate process (`fleet simulate`), reporting over CoAP to "
        f"udp/{coap_port}" + (f" and over DTLS (coaps) to udp/{coaps_port}" if coaps_port else "")
        + "; a few fail in the first seconds, so alarms show within a minute",
        *_security_lines(seeded, coap_port, coaps_port),
        *_firmware_lines(seeded, base),
        *_collection_lines(seeded),
        "Press Ctrl-C to stop.\n") if line is not None)


def _security_lines(seeded: DemoCity, coap_port: int, coaps_port: int) -> tuple[str, ...]:
    security = seeded.security
    lines = []
    if security is not None:
        modes = security.modes
        lines.append(f"  Security:  {modes.get('psk', 0)} devices with a pre-shared key, {modes.get('rpk', 0)} with a raw"
                     f" public key, {modes.get('bootstrap', 0)} bootstrapping from a factory key (keys: "
                     f"{security.credentials_file})" + ("" if coaps_port else "; coaps is off (--coaps-port 0), so"
                                                       " only the NoSec devices connect"))
    if seeded.city.allow_nosec_devices:
        nosec = security.modes.get("nosec", 0) if security is not None else "all"
        lines.append(f"  NoSec:     this demo city lets devices register without DTLS ({nosec} do, over udp/{coap_port});"
                     ' a real city should not: PATCH /api/v1/tenant {"allow_nosec_devices": false}')
    return tuple(lines)


def _collection_lines(seeded: DemoCity) -> tuple[str, ...]:
    if seeded.crew_id is None:
        return ()
    return ("  Collection: depots, disposal sites and a truck per waste kind are set up over REST; once the "
            "bins have reported (~3 min) a plan follows below, its routes go to the crew and its simulated "
            "truck drives them (only Fleet's routes empty the demo's bins)",)


def _firmware_lines(seeded: DemoCity, base: str) -> tuple[str, ...]:
    firmware = seeded.firmware
    if firmware is None:
        return ()
    return (f"  Firmware:  campaign {firmware.campaign_id} ({firmware.status}): a signed image for the "
            f"streetlights, wave by wave (release key: {firmware.key_file})",
            '             curl -H "Authorization: Bearer $ADMIN_KEY" '
            f'"$FLEET_URL/api/v1/firmware/campaigns/{firmware.campaign_id}"   (all: {base}/api/v1/firmware/campaigns)')


def demo_listeners(settings: Settings, *, coap: bool = True,
                   http: bool = True) -> list[tuple[str, socket.SocketKind, str, int, str]]:
    """What `fleet demo` (or `fleet serve`) listens on: (name, TCP or UDP, host, port, what moves it)."""
    listeners = [("HTTP", socket.SOCK_STREAM, settings.http.host, settings.http.port, "--http-port")] if http else []
    if coap:
        listeners.append(("CoAP", socket.SOCK_DGRAM, settings.coap.host, settings.coap.port, "--coap-port"))
        if settings.coap.coaps_port:  # 0: no coaps listener
            listeners.append(("CoAP over DTLS", socket.SOCK_DGRAM, settings.coap.host, settings.coap.coaps_port,
                              "--coaps-port"))
    if settings.metrics.port:  # 0: no metrics endpoint
        listeners.append(("metrics", socket.SOCK_STREAM, settings.metrics.host, settings.metrics.port,
                          "--metrics-port"))
    return listeners


def taken_ports(settings: Settings, command: str = "demo", *, http: bool = True) -> list[str]:
    """Every port the command cannot have, a line each saying so and how to move it: all at
    once, so a second demo beside the first is moved in one try, not one port a run. `fleet
    serve` leaves its CoAP ports out: its supervisor refuses them as it binds when another
    process holds them (api.node), and only when it has coap workers and coaps is on; `http`
    False (`--http-workers 0`) the HTTP port, which such a node does not open."""
    taken = []
    for name, kind, host, port, change in demo_listeners(settings, coap=command == "demo", http=http):
        problem = bind_problem(host, port, kind)
        if problem is not None:
            protocol = "TCP" if kind == socket.SOCK_STREAM else "UDP"
            how = f"choose another with {change}" if change.startswith("--") else f"set {change} to another"
            if problem.startswith("cannot resolve"):  # the host is wrong, not the port
                how = "choose another with --host"
            taken.append(f"fleet {command}: the {name} port {port} ({protocol} on {host}) {problem}; {how}")
    return taken


async def demo(settings: Settings, *, coap_workers: int = 1, http_workers: int = 1) -> int:
    from api.node import run_node
    from simulators.seed import DEMO_COUNTS, seed_demo_city
    from simulators.seed_collection import run_demo_collection
    from simulators.seed_fill_history import seed_demo_fill_history
    from simulators.seed_firmware import seed_demo_firmware
    from simulators.seed_keys import DEMO_ENV, demo_credentials_key

    set_worker("supervisor")  # its seeding's lines too: every line of a node names its process
    env_file = settings.database.data_dir / DEMO_ENV
    credentials_key = None
    if settings.security.credentials_key is None:
        # The demo's own, one per data dir and kept in demo.env: FLEET_CREDENTIALS_KEY, when set, wins.
        credentials_key = demo_credentials_key(env_file)
        settings = replace(settings, security=SecuritySettings(credentials_key=bytes.fromhex(credentials_key)))
    if "FLEET_COAPS_SOURCE_SHARE" not in os.environ:
        # Its simulated devices all come from one address, as behind a carrier NAT.
        settings = replace(settings, coap=replace(settings.coap, coaps_source_share=1.0))
    # Its ports were checked before (api.cli.main: taken_ports). Seeded here, then served by a
    # node like `fleet serve`, with the simulated devices and the collection beside it.
    async with open_database(settings) as db:
        embedded = settings.database.data_dir if settings.database.url is None else None
        seeded = await seed_demo_city(db, env_file, local_api(settings), embedded, credentials_key,
                                      settings.security)
        if seeded.created:
            await seed_demo_fill_history(db, seeded.city)   # before the scheduler learns the bins
        seeded = replace(seeded, firmware=await seed_demo_firmware(db, seeded.city, settings.database.data_dir))
    key = seeded.admin_key
    print(demo_banner(seeded, local_api(settings), settings.coap.port, settings.coap.coaps_port), flush=True)
    return await run_node(settings, coap_workers=coap_workers, http_workers=http_workers, extra=[
        lambda: run_demo_devices(settings, key, DEMO_COUNTS, seeded.crew_key),
        lambda: run_demo_collection(local_api(settings), key, str(seeded.crew_id), seeded.city.timezone)])


def demo_devices_command(settings: Settings, key: str, counts: dict[str, int], crew_key: str | None = None,
                         environ: Mapping[str, str] = os.environ) -> tuple[list[str], dict[str, str]]:
    """The demo's `fleet simulate`: its arguments and its environment. The keys go in the
    environment, which only its owner can read (the arguments every user sees: ps)."""
    from simulators.seed import demo_fault_arguments

    args = [sys.executable, "-m", "api.cli", "simulate", "--server", f"coap://127.0.0.1:{settings.coap.port}",
            *demo_security_arguments(settings),
            "--api", local_api(settings), "--streetlights", str(counts["streetlight"]),
            "--bins", str(counts["waste_bin"]), "--aps", str(counts["wifi_ap"]),
            # Real time, so the simulated dusk, dawn and dimming agree with the astronomical clock
            # and the lighting schedule the alarm rules judge by (at x60 every light would be a day
            # burner half the day); a report a minute keeps it lively.
            "--speed", "1", "--report-interval", "60", "--progress", "60", *demo_fault_arguments(),
            *(("--collection", "fleet") if crew_key else ())]
    env = {**environ, SIMULATE_KEY_ENV: key}
    env.pop(SIMULATE_TRUCK_KEY_ENV, None)  # a truck only with the demo's own crew key
    if crew_key:
        env[SIMULATE_TRUCK_KEY_ENV] = crew_key
    return args, env


def demo_security_arguments(settings: Settings) -> list[str]:
    """The demo's devices take their credentials from the file the seeder wrote, and reach the
    coaps listener (which is also the bootstrap server) on this machine."""
    from simulators.seed_keys import DEMO_ENV
    from simulators.seed_security import DEMO_CREDENTIALS

    if not settings.coap.coaps_port:
        return ["--security", "nosec"]
    return ["--credentials-file", str((settings.database.data_dir / DEMO_ENV).with_name(DEMO_CREDENTIALS)),
            "--secure-server", f"coaps://127.0.0.1:{settings.coap.coaps_port}"]


async def run_demo_devices(settings: Settings, key: str, counts: dict[str, int], crew_key: str | None = None) -> None:
    """The demo's devices: `fleet simulate` in its own process, so they reach Fleet only over
    the wire, exactly like street furniture would. With the crew's key, only Fleet's plans empty
    the bins: the crew's simulated truck drives the routes the demo gives it."""
    args, env = demo_devices_command(settings, key, counts, crew_key)
    await asyncio.sleep(2)  # let the API and the listener come up first
    process = await asyncio.create_subprocess_exec(*args, env=env)
    try:
        await process.wait()
        log.warning("demo devices stopped", returncode=process.returncode)
        await asyncio.Event().wait()  # the rest of the demo keeps running
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(20):
                    await process.wait()
            except TimeoutError:
                process.kill()


def quiet_simulator_libraries() -> None:
    """The simulator's own progress line counts requests, retransmissions and failures: one line
    per API call (httpx) or per refused datagram (aiocoap's "coap", one per device while the
    server is away, e.g. as the demo stops) is noise at INFO."""
    import logging

    for noisy in ("httpx", "coap"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


SIMULATE_KEY_ENV = "FLEET_SIMULATE_KEY"
SIMULATE_TRUCK_KEY_ENV = "FLEET_SIMULATE_TRUCK_KEY"


def simulate_key(given: str | None, path: str | None, variable: str, flag: str,
                 environ: Mapping[str, str]) -> str | None:
    """A key `fleet simulate` uses: from its file, else the deprecated flag (with a warning: it
    shows in `ps`), else the environment variable. Raises ValueError naming what is wrong."""
    if path is not None:
        try:
            secret = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {flag}-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if not secret or any(c.isspace() for c in secret):
            raise ValueError(f"{flag}-file {path} must hold the key alone")
        return secret
    if given is not None:
        print(f"warning: {flag} is visible to every user of this machine (ps); "
              f"use {variable} or {flag}-file", file=sys.stderr)
        return given
    return environ.get(variable) or None


async def simulate(args, environ: Mapping[str, str] = os.environ) -> int:
    """`fleet simulate`: simulated devices talking to a Fleet server over the wire only."""
    from datetime import datetime

    from simulators.faults import FaultPlan
    from simulators.rest import ApiError
    from simulators.simulation import Simulation, SimulationConfig, SimulationError

    try:
        key = simulate_key(args.key, args.key_file, SIMULATE_KEY_ENV, "--key", environ)
        truck_key = simulate_key(args.truck_key, args.truck_key_file, SIMULATE_TRUCK_KEY_ENV, "--truck-key",
                                 environ)
        config = SimulationConfig(
            counts={"streetlight": args.streetlights, "waste_bin": args.bins, "wifi_ap": args.aps},
            server=args.server, api=args.api, key=key, provision=args.provision,
            devices_file=Path(args.devices_file) if args.devices_file else None, seed=args.seed,
            speed=args.speed, duration_s=args.duration,
            start=datetime.fromisoformat(args.start) if args.start else None,
            lifetime_s=args.lifetime, report_interval_s=args.report_interval,
            register_rate=args.register_rate, faults=FaultPlan.parse(args.fault, args.faults),
            progress_s=args.progress, firmware_block_size=args.fw_block_size, collection=args.collection,
            truck_key=truck_key, security=args.security,
            credentials_file=Path(args.credentials_file) if args.credentials_file else None,
            secure_server=args.secure_server, bootstrap_server=args.bootstrap_server)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    quiet_simulator_libraries()
    try:
        await Simulation(config).run(handle_signals=True)
    except (SimulationError, ApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
