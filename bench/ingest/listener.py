"""One Fleet CoAP listener process for the ingest benchmark: the real `open_listener`, plus counters.

Started N times on one UDP port (aiocoap's udp6 sets SO_REUSEPORT); speaks the READY/STATS
handshake of :mod:`bench.coap.servers` on stdout. Besides CPU and RSS it reports what Fleet
committed, the size of aiocoap's duplicate-detection cache and an RSS sample per second, so a
long run shows where memory levels off once entries start to expire (EXCHANGE_LIFETIME).

    FLEET_DATABASE_URL=postgresql://... python -m bench.ingest.listener --port 5683 [--profile out.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import sys
import time

from bench.coap.servers import rss_kib, serve_until_signalled


def duplicate_cache_size(context) -> int:
    return sum(
        len(getattr(getattr(i, "token_interface", None), "_recent_messages", ()))
        for i in context.request_interfaces
    )


async def _sample_memory(context, samples: list[tuple[float, int, int, int]], every_s: float) -> None:
    """(seconds, RSS KiB, aiocoap dedup entries, fast-path dedup entries), every every_s."""
    from protocols.coap import transport

    fast_paths = getattr(transport, "fast_paths", lambda context: [])
    start = time.monotonic()
    while True:
        samples.append((round(time.monotonic() - start, 1), rss_kib(), duplicate_cache_size(context),
                        sum(len(f.recent) for f in fast_paths(context))))
        await asyncio.sleep(every_s)


def alarm_rules(db, mode: str):
    """(alarm service or None, evaluator or None) of a listener: no rules ("off"), rules whose
    findings go nowhere ("noop"), or the device edge of `fleet serve` ("alarms":
    api.runtime.run_device_edge's AlarmService, whose changes reach the work orders, and its
    RuleEvaluator applying findings through it)."""
    if mode == "off":
        return None, None
    from fleet.alarms.evaluator import RuleEvaluator

    if mode == "alarms":
        from api.runtime import alarm_service

        alarms = alarm_service(db)
        return alarms, RuleEvaluator(db, alarms.apply, settings=alarms.effective_settings)

    async def nowhere(findings) -> None:
        return None

    return None, RuleEvaluator(db, nowhere)


async def serve(dsn: str, bind: str, port: int, pool_max: int, sample_every_s: float,
                flushers: int | None = None, rules_mode: str = "off", coaps_port: int | None = None) -> None:
    from fleet.db import Database
    from protocols.coap import transport
    from protocols.lwm2m.listener import open_listener

    if flushers:
        # An experiment knob: open_listener builds its TelemetryWriter with the defaults.
        from fleet.telemetry.service import TelemetryWriter
        TelemetryWriter.__init__.__kwdefaults__["flushers"] = flushers
    db = await Database.connect(dsn, min_size=2, max_size=pool_max)
    try:
        alarms, rules = alarm_rules(db, rules_mode)
        secure = {}
        if coaps_port:
            from fleet.settings import SecuritySettings, parse_credentials_key

            # The bench's devices all come from one address, as behind a carrier NAT: the
            # per-source share of the handshake rates is off, as FLEET_COAPS_SOURCE_SHARE=1 does.
            secure = {"coaps_port": coaps_port, "coaps_limits": {"source_share": 1.0},
                      "security": SecuritySettings(
                          credentials_key=parse_credentials_key(os.environ.get("FLEET_CREDENTIALS_KEY")))}
        async with open_listener(db, bind, port, alarm_service=alarms, rules=rules, **secure) as listener:
            samples: list[tuple[float, int, int, int]] = []
            sampler = asyncio.create_task(_sample_memory(listener.context, samples, sample_every_s))
            writer = listener.writer

            def stats() -> dict:
                sampler.cancel()
                # getattr: the bench also measures trees from before the fast path existed
                fast = getattr(transport, "fast_paths", lambda context: [])(listener.context)
                return {
                    "fast_path": {name: sum(getattr(f, name) for f in fast)
                                  for name in ("answered", "delegated", "duplicates", "separate")},
                    "fast_path_cache": sum(len(f.recent) for f in fast),
                    "committed_points": writer.committed_points,
                    "batches": writer.batches,
                    "sessions": len(listener.server.sessions),
                    "duplicate_cache": duplicate_cache_size(listener.context),
                    "rss_samples": samples,
                    "rules": None if rules is None else {
                        "judged_points": rules.judged_points, "findings": rules.findings,
                        "batches": getattr(rules, "batches", 0),
                        "dropped": rules.dropped, "waiting": len(rules._waiting)},
                }

            await serve_until_signalled(listener.port, stats)
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest.listener", description=__doc__.split("\n")[0])
    parser.add_argument("--bind", default="::")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pool-max", type=int, default=10)
    parser.add_argument("--sample-every", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--flushers", type=int, help="concurrent commits per listener (default: Fleet's)")
    parser.add_argument("--profile", help="write a cProfile of the whole process to this file")
    parser.add_argument("--rules", choices=("off", "noop", "alarms"), default="off",
                        help="alarm rules: off, findings dropped (noop), or into AlarmService")
    parser.add_argument("--coaps-port", type=int, default=None,
                        help="also CoAP over DTLS on this port (needs FLEET_CREDENTIALS_KEY)")
    args = parser.parse_args(argv)
    dsn = os.environ.get("FLEET_DATABASE_URL")
    if not dsn:
        parser.error("FLEET_DATABASE_URL must be set")
    # Fleet logs a line per refused /3/0 read after Register; warnings and errors are enough here.
    from fleet.logging import configure_logging
    from fleet.settings import LogSettings
    configure_logging(LogSettings(level="WARNING", format="json"))
    logging.getLogger().setLevel(logging.WARNING)

    import protocols.lwm2m.listener  # noqa: F401 - loaded before tune_gc freezes what exists
    from api.runtime import tune_gc
    tune_gc()  # as `fleet serve` does
    work = lambda: asyncio.run(serve(dsn, args.bind, args.port, args.pool_max, args.sample_every, args.flushers,
                                   args.rules, args.coaps_port))  # noqa: E731
    if args.profile:
        # CPU time, not wall time: on a shared machine a wall-clock profile mostly shows waiting.
        profiler = cProfile.Profile(time.process_time)
        profiler.runcall(work)
        profiler.dump_stats(f"{args.profile}.{os.getpid()}")
    else:
        work()
    return 0


if __name__ == "__main__":
    sys.exit(main())
