"""One process of the storm's simulated streetlights: loaded and connected, they wait for SIGUSR1.

    python -m bench.storm.devices --server coap://127.0.0.1:5683 --devices-file part.csv --lights 5000

The devices are `simulators` (each its own UDP socket, answering the server's reads, reporting
by Send right after each Register), on uvloop as in bench/dimming: the devices are not what is
measured. The process prints `READY` once every socket is open, starts registering on SIGUSR1
(every load process at the same moment: the power comes back) and then prints its counters as
one JSON line every `--every` seconds, stamped with CLOCK_MONOTONIC, which the whole machine
shares; SIGTERM de-registers and ends with a last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import signal
import sys
import time
from pathlib import Path

import uvloop

from simulators.simulation import Simulation, SimulationConfig

COUNTERS = ("registered", "online", "registrations", "registration_failures", "registrations_busy",
            "registrations_lost", "sends", "sends_acked", "sends_failed", "sends_busy", "sends_lost",
            "retransmissions", "timeouts", "server_requests", "server_errors_answered", "deregistered", "errors")


def counters(simulation: Simulation) -> dict:
    stats = simulation.stats
    return {"t": time.monotonic(), **{name: getattr(stats, name) for name in COUNTERS}}


class StormSimulation(Simulation):
    """A Simulation whose devices hold their registrations until the storm is called."""

    def __init__(self, config: SimulationConfig, go: asyncio.Event) -> None:
        super().__init__(config, out=None)
        self.go = go

    async def _open_sockets(self) -> None:
        await super()._open_sockets()
        print("READY", flush=True)
        await self.go.wait()


async def run(config: SimulationConfig, every_s: float) -> None:
    go = asyncio.Event()
    # Installed before READY is printed: SIGUSR1's default action would end the process.
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, go.set)
    simulation = StormSimulation(config, go)

    async def report() -> None:
        await go.wait()
        while True:
            print(json.dumps(counters(simulation)), flush=True)
            await asyncio.sleep(every_s)

    reporter = asyncio.create_task(report())
    try:
        await simulation.run(handle_signals=True)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    print(json.dumps(counters(simulation)), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm.devices", description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--devices-file", required=True)
    parser.add_argument("--lights", type=int, required=True)
    parser.add_argument("--register-rate", type=float, required=True, help="this process's share, per second")
    parser.add_argument("--max-registering", type=int, required=True, help="first registrations in flight")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between counter lines")
    args = parser.parse_args(argv)
    from fleet.logging import configure_logging
    from fleet.settings import LogSettings
    # On stderr, so stdout carries only READY and the counters.
    configure_logging(LogSettings(level="WARNING", format="json"))
    logging.getLogger().setLevel(logging.WARNING)
    # Evening in Seoul: the lights are lit; a lifetime of a day, so no Update falls in the run.
    config = SimulationConfig(counts={"streetlight": args.lights}, server=args.server,
                              devices_file=Path(args.devices_file), start=dt.datetime(2026, 11, 24, 21, 0),
                              lifetime_s=86_400, register_rate=args.register_rate, progress_s=0,
                              max_registering=args.max_registering, deregister_timeout_s=10.0)
    uvloop.run(run(config, args.every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
