"""One Fleet CoAP listener process for the firmware benchmark: the real `open_listener` (so the
real peer limit, fast path and caches), with its delivery counters in the STATS line.

    FLEET_DATABASE_URL=postgresql://... python -m bench.firmware.listener --port 5683
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys


async def serve(dsn: str, port: int) -> None:
    from bench.coap.servers import serve_until_signalled
    from fleet.db import Database
    from protocols.coap import transport
    from protocols.lwm2m.listener import open_listener

    db = await Database.connect(dsn, min_size=2, max_size=10)
    try:
        async with open_listener(db, "::", port) as listener:
            downloads = listener.server.downloads

            def stats() -> dict:
                fast = transport.fast_paths(listener.context)
                return {"blocks_served": downloads.blocks_served, "bytes_served": downloads.bytes_served,
                        "downloads_finished": downloads.downloads_finished,
                        "fast_path_blocks": sum(f.blocks for f in fast),
                        "chunk_loads": downloads.chunks.loads, "chunk_bytes": downloads.chunks.held_bytes,
                        "tokens_cached": len(downloads.tokens._known),
                        "fast_path_cache": sum(len(f.recent) for f in fast)}

            await serve_until_signalled(listener.port, stats)
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.firmware.listener", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    dsn = os.environ.get("FLEET_DATABASE_URL")
    if not dsn:
        parser.error("FLEET_DATABASE_URL must be set")
    from fleet.logging import configure_logging
    from fleet.settings import LogSettings
    configure_logging(LogSettings(level="WARNING", format="json"))
    logging.getLogger().setLevel(logging.WARNING)
    import protocols.lwm2m.listener  # noqa: F401 - loaded before tune_gc freezes what exists
    from api.runtime import tune_gc
    tune_gc()  # as `fleet serve` does
    asyncio.run(serve(dsn, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
