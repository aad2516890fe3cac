"""One process of the storm's simulated streetlights: loaded and connected, they wait for SIGUSR1.

    python -m bench.storm.devices --server coap://127.0.0.1:5683 --devices-file part.csv --lights 5000 \\
        --register-rate 1000 --max-registering 5000

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
from typing import TYPE_CHECKING

import uvloop

from bench.processes import ended
from bench.serve import REPO, child_env
from simulators.simulation import Simulation, SimulationConfig

if TYPE_CHECKING:
    from bench.storm.city import StormCity

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


# -- in the benchmark process ------------------------------------------------------------------


class Lights:
    """The load processes of one storm: started, READY, sent SIGUSR1 together, counted, stopped."""

    def __init__(self, city: StormCity, coap_port: int, register_rate: float, max_registering: int,
                 work: Path) -> None:
        self.city, self.coap_port, self.work = city, coap_port, work
        self.register_rate, self.max_registering = register_rate, max_registering
        self.processes: list[asyncio.subprocess.Process] = []
        self.latest: list[dict] = []
        self._readers: list[asyncio.Task] = []

    async def start(self) -> None:
        for number, (path, lights) in enumerate(self.city.devices_files, start=1):
            share = lights / self.city.devices  # of the offered rate and of the window in flight
            window = max(1, round(self.max_registering * share)) if self.max_registering else lights
            log = (self.work / f"{self.city.slug}-devices-{number}.log").open("w")
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.storm.devices", "--server", f"coap://127.0.0.1:{self.coap_port}",
                "--devices-file", str(path), "--lights", str(lights),
                "--register-rate", str(self.register_rate * share), "--max-registering", str(window),
                cwd=REPO, env=child_env(), stdout=asyncio.subprocess.PIPE, stderr=log, limit=1 << 20)
            log.close()
            self.processes.append(process)
            self.latest.append({})
        async with asyncio.timeout(120):
            for process in self.processes:
                while (line := await process.stdout.readline()) != b"READY\n":
                    if not line:
                        raise RuntimeError(f"load process {process.pid} ended before READY")
        self._readers = [asyncio.create_task(self._read(n, p)) for n, p in enumerate(self.processes)]

    async def _read(self, number: int, process: asyncio.subprocess.Process) -> None:
        while line := await process.stdout.readline():
            with contextlib.suppress(ValueError):
                self.latest[number] = json.loads(line)

    def go(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGUSR1)

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for latest in self.latest:
            for name, value in latest.items():
                if name != "t":
                    total[name] = total.get(name, 0) + value
        return total

    async def sends_settled(self, timeout_s: float) -> dict[str, int]:
        """The counts once every light that registered has sent its report and every Send has
        its answer (or timed out), at most `timeout_s` from now."""
        deadline = time.monotonic() + timeout_s
        while True:
            counts = self.counters()
            sends = counts.get("sends", 0)
            if (counts.get("registered", 0) >= self.city.devices and sends >= counts["registered"]
                    and sends <= counts.get("sends_acked", 0) + counts.get("sends_failed", 0)) \
                    or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        """SIGTERM: the lights de-register (bounded by the simulator), then the last counts."""
        await asyncio.gather(*(ended(process) for process in self.processes))
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await reader


if __name__ == "__main__":
    sys.exit(main())
