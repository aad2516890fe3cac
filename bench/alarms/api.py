"""The REST API alone, for bench/alarms/latency.py: `fleet serve` without CoAP and scheduler.

    FLEET_DATABASE_URL=... FLEET_HTTP_PORT=8123 python -m bench.alarms.api
"""

from __future__ import annotations

import asyncio
import sys

from api.runtime import open_database, run_http
from fleet.logging import configure_logging
from fleet.settings import LogSettings, load_settings


async def serve() -> None:
    settings = load_settings()
    async with open_database(settings, run_migrations=False) as db:
        await run_http(db, settings, settings.http.host, settings.http.port)


if __name__ == "__main__":
    configure_logging(LogSettings(level="WARNING"))
    sys.exit(asyncio.run(serve()))
