"""The `fleet` console command: serve, migrate, tenants, API keys, demo, firmware release keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from fleet.access.models import Role
from fleet.db.embedded import NO_EMBEDDED_FIX, EmbeddedPostgresMissing, has_embedded
from fleet.db.reach import DatabaseUnreachable
from fleet.errors import SettingsError
from fleet.logging import configure_logging
from fleet.settings import Settings, load_settings
from simulators.faults import ELIGIBLE as FAULT_KINDS

METRICS_PORT_HELP = ("TCP port of Prometheus's /metrics (a node's: its workers' merged); 0 turns it off "
                     "(default: FLEET_METRICS_PORT, 9464)")


def version() -> str:
    """The installed package's version (pyproject.toml), as `pip show fleet` reports it."""
    try:
        return metadata.version("fleet")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def port(text: str) -> int:
    """A TCP or UDP port from the command line; refused by argparse in one line otherwise (an
    out-of-range one would be taken modulo 65536 by some calls and refused by others)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, 0 to 65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, 0 to 65535, got {value}")
    return value


def _listen_options(parser: argparse.ArgumentParser, *, verb: str = "listen on") -> None:
    """Where the node's HTTP and CoAP listeners are: the same options for serve, demo and doctor."""
    parser.add_argument("--host", default=None, metavar="ADDRESS",
                        help=f"address to {verb}, HTTP and CoAP both (default: FLEET_HTTP_HOST, 127.0.0.1,"
                             " for HTTP and FLEET_COAP_HOST, every address, for CoAP)")
    parser.add_argument("--coap-host", default=None, metavar="ADDRESS",
                        help="UDP address for CoAP when it differs from --host")
    parser.add_argument("--http-port", type=port, default=None, metavar="PORT",
                        help="HTTP port (default: FLEET_HTTP_PORT, 8000)")
    parser.add_argument("--coap-port", type=port, default=None, metavar="PORT",
                        help="CoAP UDP port (default: FLEET_COAP_PORT, 5683)")
    parser.add_argument("--coaps-port", type=port, default=None, metavar="PORT", help=COAPS_PORT_HELP)


def workers(text: str) -> int:
    """A number of worker processes from the command line, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of processes, 0 or more, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of processes, 0 or more, got {value}")
    return value


def _worker_options(parser: argparse.ArgumentParser, coap_default: str, http_default: str, *,
                    off: bool = True) -> None:
    """How many processes of each kind the node runs (api.node; docs/scaling.md); `off`: 0 may
    leave a side off."""
    parser.add_argument("--coap-workers", type=workers, default=None, metavar="N",
                        help="device-edge processes sharing the CoAP ports"
                             f"{'; 0: no device edge on this node' if off else ''}"
                             f" (default: FLEET_COAP_WORKERS, {coap_default})")
    parser.add_argument("--http-workers", type=workers, default=None, metavar="N",
                        help=f"HTTP API processes sharing the HTTP port{'; 0: no API on this node' if off else ''}"
                             f" (default: FLEET_HTTP_WORKERS, {http_default})")


COAPS_PORT_HELP = ("CoAP over DTLS (coaps://) UDP port; 0 turns it off (default: FLEET_COAPS_PORT, 5684). "
                   "Needs FLEET_CREDENTIALS_KEY")


# Why --key and --truck-key are only kept for old scripts: every user of the machine sees a
# process's arguments (ps, /proc/PID/cmdline), while its environment is its owner's alone.
KEY_IN_ARGUMENTS = "deprecated: a key in the arguments is visible to every user of the machine (ps)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet", description="Fleet: a city's smart street furniture backend",
        epilog="Settings come from FLEET_* environment variables (FLEET_DATABASE_URL, FLEET_HTTP_PORT, ...); "
               "see docs/operations.md.")
    parser.add_argument("--version", action="version", version=f"fleet {version()}",
                        help="print Fleet's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API, CoAP listener and scheduler")
    _listen_options(serve)
    serve.add_argument("--metrics-port", type=port, default=None, metavar="PORT", help=METRICS_PORT_HELP)
    _worker_options(serve, "as many as cores", "half as many as cores, at least 1")

    coap = sub.add_parser("coap", help="run only the CoAP/LwM2M listener")
    coap.add_argument("--host", default=None, metavar="ADDRESS",
                      help="UDP address (default: FLEET_COAP_HOST, every address)")
    coap.add_argument("--coap-port", type=port, default=None, metavar="PORT",
                      help="CoAP UDP port (default: FLEET_COAP_PORT, 5683)")
    coap.add_argument("--coaps-port", type=port, default=None, metavar="PORT", help=COAPS_PORT_HELP)
    coap.add_argument("--metrics-port", type=port, default=None, metavar="PORT", help=METRICS_PORT_HELP)

    sub.add_parser("migrate", help="apply pending database migrations")

    tenant = sub.add_parser("tenant", help="manage cities").add_subparsers(dest="tenant_command", required=True)
    create = tenant.add_parser("create", help="create a city")
    create.add_argument("slug", help="the city's short name in URLs and commands: 2-63 lowercase letters, "
                                      "digits or dashes, e.g. seoul")
    create.add_argument("--name", required=True, help="the city's name as people read it, e.g. 'Seoul'")
    create.add_argument("--timezone", required=True, help="IANA timezone, e.g. Asia/Seoul")
    create.add_argument("--allow-nosec", action="store_true",
                        help="let the city's devices register without DTLS (plain coap://); by default a new "
                             "city refuses them (change later: PATCH /api/v1/tenant allow_nosec_devices)")
    tenant.add_parser("list", help="list cities: slug, name, timezone, devices, created")

    apikey = sub.add_parser("apikey", help="manage API keys").add_subparsers(dest="apikey_command", required=True)
    key_create = apikey.add_parser("create", help="issue a key; prints it alone on the last line")
    key_create.add_argument("--tenant", required=True, help="city slug")
    key_create.add_argument("--role", required=True, choices=[role.value for role in Role],
                            help="what the key may do: admin (everything), operator (devices, commands, "
                                 "plans), crew (work orders, alarms), viewer (read), reporter (Open311 reports)")
    key_create.add_argument("--name", default="", help="what the key is for, shown in key lists (default: none)")
    key_create.add_argument("--crew", default=None, help="crew role only: the name of the crew the key belongs to")
    key_list = apikey.add_parser("list", help="list a city's keys (never their secrets)")
    key_list.add_argument("--tenant", required=True, help="city slug")
    key_revoke = apikey.add_parser("revoke", help="revoke a key on every node at once (audited)")
    key_revoke.add_argument("--tenant", required=True, help="city slug")
    key_revoke.add_argument("key", metavar="KEY_ID", help="the key's id, or its prefix as `fleet apikey list` "
                                                          "shows it (fleet_1a2b3c4d)")

    demo = sub.add_parser("demo", help="seed a demo city and run everything until Ctrl-C")
    _listen_options(demo)
    demo.add_argument("--metrics-port", type=port, default=None, metavar="PORT", help=METRICS_PORT_HELP)
    _worker_options(demo, "1", "1", off=False)

    doctor = sub.add_parser(
        "doctor", help="check a deployment: database, roles, row security, migrations, clock, device keys, "
                       "listeners",
        description="One line per check: ok, warn or FAIL, what was found and what to do. Exits 1 when "
                    "a check failed. Reads the same FLEET_* variables as `fleet serve`.")
    _listen_options(doctor, verb="find the node at")
    doctor.add_argument("--no-node", dest="node", action="store_false",
                        help="no node runs on this machine: skip the CoAP ping and the HTTP /readyz check")
    doctor.add_argument("--coap-workers", type=workers, default=None, metavar="N",
                        help="the node's, as `fleet serve` was given them: 0 (an API-only node) skips the CoAP "
                             "and coaps checks (default: FLEET_COAP_WORKERS, else checked)")
    doctor.add_argument("--http-workers", type=workers, default=None, metavar="N",
                        help="the node's, as `fleet serve` was given them: 0 (a device-only node) skips the "
                             "HTTP /readyz check (default: FLEET_HTTP_WORKERS, else checked)")

    simulate = sub.add_parser(
        "simulate", help="run simulated devices against a Fleet server over CoAP",
        description="Each device is an LwM2M client on its own UDP socket. --api and a key "
                    "(FLEET_SIMULATE_KEY or --key-file) are needed in both modes: to list the city's "
                    "devices, or with --provision to create them first (or give --devices-file, a CSV "
                    "from /api/v1/devices/export).")
    simulate.add_argument("--streetlights", type=int, default=0, metavar="N",
                          help="simulated streetlights (default 0)")
    simulate.add_argument("--bins", type=int, default=0, metavar="N", help="simulated waste bins (default 0)")
    simulate.add_argument("--aps", type=int, default=0, metavar="N",
                          help="simulated Wi-Fi access points (default 0)")
    simulate.add_argument("--server", default="coap://127.0.0.1:5683", help="the LwM2M server, coap://HOST:PORT")
    simulate.add_argument("--secure-server", default=None, metavar="URI",
                          help="Fleet's DTLS listener, coaps://HOST:PORT (default: --server's host, port 5684)")
    simulate.add_argument("--bootstrap-server", default=None, metavar="URI",
                          help="where bootstrapping devices ask for their account (default: --secure-server)")
    simulate.add_argument("--security", choices=("nosec", "psk", "rpk", "bootstrap"), default=None,
                          help="every device's security mode; a device without such a credential in"
                               " --credentials-file gets a new one, set in Fleet over --api (default:"
                               " each device as its --credentials-file entry says, NoSec without one)")
    simulate.add_argument("--credentials-file", default=None, metavar="PATH",
                          help="the devices' credentials (JSON: endpoint -> mode and key; `fleet demo`"
                               " writes one in its data directory); credentials made by --security are"
                               " added to it")
    simulate.add_argument("--provision", action="store_true", help="create missing devices over the REST API first")
    simulate.add_argument("--api", default=None, help="Fleet's REST API, e.g. http://127.0.0.1:8000")
    key = simulate.add_mutually_exclusive_group()
    key.add_argument("--key-file", default=None, metavar="PATH",
                     help="file holding the city's API key (admin or operator to provision); "
                          "default: the FLEET_SIMULATE_KEY environment variable")
    key.add_argument("--key", default=None, help=f"the key itself; {KEY_IN_ARGUMENTS}")
    simulate.add_argument("--devices-file", default=None, help="devices CSV in the export format, instead of --api")
    simulate.add_argument("--seed", type=int, default=1,
                          help="random seed: the same seed gives the same devices and faults (default 1)")
    simulate.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second (default 1)")
    simulate.add_argument("--start", default=None, help="simulated local start time, e.g. 2026-11-24T18:00")
    simulate.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
    simulate.add_argument("--lifetime", type=int, default=300, metavar="SECONDS",
                          help="registration lifetime (default 300)")
    simulate.add_argument("--report-interval", type=float, default=None, metavar="SECONDS",
                          help="simulated seconds between Sends (default 900)")
    simulate.add_argument("--register-rate", type=float, default=200.0, metavar="PER_S",
                          help="first registrations started per second (default 200)")
    simulate.add_argument("--faults", action="store_true", help="random faults at low rates")
    simulate.add_argument("--fault", action="append", default=[], metavar="KIND=FRACTION",
                          help=f"force a fault on that fraction of the devices it fits: {', '.join(FAULT_KINDS)} "
                               "(for malformed: the chance per report); repeatable")
    simulate.add_argument("--fw-block-size", type=int, default=None, choices=(16, 32, 64, 128, 256, 512, 1024),
                          metavar="BYTES", help="firmware block size of every device (default: its model's,"
                                                " 1024 streetlights and APs, 512 bins)")
    simulate.add_argument("--collection", choices=("round", "fleet"), default="round",
                          help="who empties the bins: 'round', district crews on a fixed night round;"
                               " 'fleet', only Fleet (the 'emptied' Execute, or a truck with a crew key"
                               " driving Fleet's routes)")
    truck_key = simulate.add_mutually_exclusive_group()
    truck_key.add_argument("--truck-key-file", default=None, metavar="PATH",
                           help="file holding a crew's API key: a simulated truck drives the routes assigned"
                                " to that crew, emptying each bin it reaches and marking its stop done"
                                " (default: the FLEET_SIMULATE_TRUCK_KEY environment variable)")
    truck_key.add_argument("--truck-key", default=None, metavar="CREW_KEY",
                           help=f"the crew's key itself; {KEY_IN_ARGUMENTS}")
    simulate.add_argument("--progress", type=float, default=5.0, metavar="SECONDS",
                          help="status line interval (0: summary only; default 5)")

    firmware = sub.add_parser("firmware", help="release keys and signatures for firmware images (no database)")
    firmware_sub = firmware.add_subparsers(dest="firmware_command", required=True)
    keygen = firmware_sub.add_parser(
        "keygen", help="make a new Ed25519 release key; prints the public key PEM the city registers",
        description="Writes the private key (PEM, PKCS#8, unencrypted, mode 0600) and prints the public "
                    "key to register with POST /api/v1/firmware/keys. Keep the private key offline.")
    keygen.add_argument("--out", default="release-key.pem", metavar="KEYFILE",
                        help="where to write the private key; an existing file is never overwritten "
                             "(default: release-key.pem)")
    sign = firmware_sub.add_parser(
        "sign", help="print the base64 Ed25519 signature of an image (the upload's `signature` field)")
    sign.add_argument("file", metavar="FILE", help="the firmware image, exactly as it will be uploaded")
    sign.add_argument("--key", required=True, metavar="KEYFILE", help="the private key `fleet firmware keygen` wrote")
    return parser


def firmware(args: argparse.Namespace) -> int:
    """`fleet firmware keygen` and `sign`: local files only, so a signing machine needs no Fleet."""
    from fleet.firmware.signatures import BadKey, new_signing_key, sign, signing_key

    if args.firmware_command == "keygen":
        private, public = new_signing_key()
        try:
            # O_EXCL: never replace a key images may already be signed with.
            descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            print(f"fleet firmware keygen: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
            return 1
        with os.fdopen(descriptor, "wb") as out:
            out.write(private)
        print(f"private key written to {args.out}; register this public key:", file=sys.stderr)
        print(public, end="")
        return 0
    try:
        key = signing_key(Path(args.key).read_bytes())
        content = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"fleet firmware sign: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    except BadKey as exc:
        print(f"fleet firmware sign: {args.key}: {exc}", file=sys.stderr)
        return 1
    print(sign(key, content))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "firmware":
        return firmware(args)
    try:
        settings = load_settings()
        if args.command in ("demo", "serve", "doctor"):
            from api.node import coap_nice, worker_counts

            coap_nice()  # checked here, where a wrong value is one line, not a worker failing to start
            # `fleet doctor` only asks whether a side is off (0).
            args.coap_workers, args.http_workers = worker_counts(
                args.coap_workers, args.http_workers, defaults=None if args.command == "serve" else (1, 1))
            if args.command == "demo" and 0 in (args.coap_workers, args.http_workers):
                # Its simulated devices need the device edge, they and its trucks the API.
                print("fleet demo: it needs both sides: --coap-workers and --http-workers at least 1", file=sys.stderr)
                return 2
    except SettingsError as exc:
        # A setting is the operator's to fix: the variable and what it takes, no traceback.
        print(f"fleet: {exc}", file=sys.stderr)
        return 2
    if args.command in ("demo", "serve"):
        # Before anything is printed, logged or started: a port another program holds would
        # otherwise end the demo after the database's start, the seeding and the banner (and
        # `fleet serve` with uvicorn's exit and a page of tracebacks).
        from api.commands import taken_ports

        taken = taken_ports(serve_settings(args, settings), args.command, http=args.http_workers > 0)
        if taken:
            print("\n".join(taken), file=sys.stderr)
            return 2
    if needs_existing_database(args) and settings.database.url is None \
            and not has_embedded(settings.database.data_dir):
        # Listing or changing a city's keys in an empty database made on the spot (a shell
        # without the demo's FLEET_DATA_DIR) would only end in "tenant not found", or in a
        # key issued where no node looks.
        print(f"fleet {args.command}: no embedded PostgreSQL in {settings.database.data_dir}: {NO_EMBEDDED_FIX}",
              file=sys.stderr)
        return 1
    configure_logging(settings.log)
    if args.command in ("serve", "coap", "demo"):
        # The server's modules first: tune_gc freezes what exists.
        import api.app  # noqa: F401
        import api.commands  # noqa: F401
        from api.runtime import tune_gc

        tune_gc()
    try:
        return asyncio.run(_dispatch(args, settings))
    except KeyboardInterrupt:
        return 130
    except EmbeddedPostgresMissing as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    except DatabaseUnreachable as exc:
        print(f"fleet: {exc} (FLEET_DATABASE_URL; `fleet doctor` checks the rest)", file=sys.stderr)
        return 1


def needs_existing_database(args: argparse.Namespace) -> bool:
    """The commands that act on a city that must exist already: all of `fleet apikey` and
    `fleet tenant list` (`fleet tenant create` may be a new deployment's first command)."""
    return args.command == "apikey" or (args.command == "tenant" and args.tenant_command == "list")


def with_metrics_port(args: argparse.Namespace, settings: Settings) -> Settings:
    if getattr(args, "metrics_port", None) is None:  # `fleet doctor` has none
        return settings
    return replace(settings, metrics=replace(settings.metrics, port=args.metrics_port))


def serve_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """`--host` moves both listeners; `--coap-host` moves CoAP apart from it."""
    settings = with_metrics_port(args, settings)
    return replace(
        settings,
        http=replace(settings.http, host=args.host or settings.http.host,
                     port=args.http_port if args.http_port is not None else settings.http.port),
        coap=replace(settings.coap, host=args.coap_host or args.host or settings.coap.host,
                     port=args.coap_port if args.coap_port is not None else settings.coap.port,
                     coaps_port=args.coaps_port if args.coaps_port is not None else settings.coap.coaps_port),
    )


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from api import commands

    if args.command == "doctor":
        from api.doctor import doctor

        return await doctor(serve_settings(args, settings), node=args.node, coap=args.coap_workers > 0,
                            http=args.http_workers > 0)
    if args.command in ("serve", "demo"):
        settings = serve_settings(args, settings)
        run = commands.serve if args.command == "serve" else commands.demo
        return await run(settings, coap_workers=args.coap_workers, http_workers=args.http_workers)
    if args.command == "coap":
        settings = replace(with_metrics_port(args, settings), coap=replace(
            settings.coap, host=args.host or settings.coap.host,
            port=args.coap_port if args.coap_port is not None else settings.coap.port,
            coaps_port=args.coaps_port if args.coaps_port is not None else settings.coap.coaps_port))
        return await commands.coap_only(settings)
    if args.command == "migrate":
        return await commands.migrate_only(settings)
    if args.command == "tenant":
        if args.tenant_command == "create":
            return await commands.tenant_create(settings, args.slug, args.name, args.timezone, args.allow_nosec)
        return await commands.tenant_list(settings)
    if args.command == "apikey":
        if args.apikey_command == "list":
            return await commands.apikey_list(settings, args.tenant)
        if args.apikey_command == "revoke":
            return await commands.apikey_revoke(settings, args.tenant, args.key)
        return await commands.apikey_create(settings, args.tenant, args.role, args.name, args.crew)
    if args.command == "simulate":
        return await commands.simulate(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
