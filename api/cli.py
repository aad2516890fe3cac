"""The `fleet` console command: serve, migrate, tenants, API keys, demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace

from fleet.logging import configure_logging
from fleet.settings import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description="Fleet: a city's smart street furniture backend")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API, CoAP listener and scheduler")
    serve.add_argument("--host", default=None, help="address to listen on (default FLEET_HTTP_HOST or 127.0.0.1)")
    serve.add_argument("--http-port", type=int, default=None)
    serve.add_argument("--coap-port", type=int, default=None)

    sub.add_parser("migrate", help="apply pending database migrations")

    tenant = sub.add_parser("tenant", help="manage cities").add_subparsers(dest="tenant_command", required=True)
    create = tenant.add_parser("create", help="create a city")
    create.add_argument("slug")
    create.add_argument("--name", required=True)
    create.add_argument("--timezone", required=True, help="IANA timezone, e.g. Asia/Seoul")
    tenant.add_parser("list", help="list cities")

    apikey = sub.add_parser("apikey", help="manage API keys").add_subparsers(dest="apikey_command", required=True)
    key_create = apikey.add_parser("create", help="issue a key; prints it alone on the last line")
    key_create.add_argument("--tenant", required=True, help="city slug")
    key_create.add_argument("--role", required=True, choices=["admin", "operator", "crew", "viewer"])
    key_create.add_argument("--name", default="")

    demo = sub.add_parser("demo", help="seed a demo city and run everything until Ctrl-C")
    demo.add_argument("--host", default=None)
    demo.add_argument("--http-port", type=int, default=None)
    demo.add_argument("--coap-port", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log)
    try:
        return asyncio.run(_dispatch(args, settings))
    except KeyboardInterrupt:
        return 130


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from api import commands

    if args.command in ("serve", "demo"):
        settings = replace(
            settings,
            http=replace(settings.http, host=args.host or settings.http.host,
                         port=args.http_port if args.http_port is not None else settings.http.port),
            coap=replace(settings.coap, port=args.coap_port if args.coap_port is not None else settings.coap.port),
        )
        return await (commands.serve(settings) if args.command == "serve" else commands.demo(settings))
    if args.command == "migrate":
        return await commands.migrate_only(settings)
    if args.command == "tenant":
        if args.tenant_command == "create":
            return await commands.tenant_create(settings, args.slug, args.name, args.timezone)
        return await commands.tenant_list(settings)
    if args.command == "apikey":
        return await commands.apikey_create(settings, args.tenant, args.role, args.name)
    return 2


if __name__ == "__main__":
    sys.exit(main())
