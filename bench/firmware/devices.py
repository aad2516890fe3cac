"""The firmware campaign bench's simulated devices in their own process, with a bench-only
driver on stdin for the baseline: the same devices pulling a package from any URI.

    python -m bench.firmware.devices --server coap://127.0.0.1:5683 --devices-file lights.csv

The devices are `simulators` (as `fleet simulate --devices-file`) on uvloop. Every second a line
`STATS {json}` goes to stdout (the simulators' counters: firmware blocks, packages, installs, CPU).
A line `{"pull": URI, "count": N, "concurrency": C}` on stdin makes N devices take URI as if it
had been written to their /5/0/1, at most C downloading at once, each next one as one ends; then
`PULLED {json}` says how many blocks in how long. Firmware blocks are counted by the devices.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

import uvloop

from simulators.firmware import DOWNLOADED, DOWNLOADING
from simulators.firmware_transfer import TABLE as FIRMWARE_RESOURCES
from simulators.simulation import Simulation, SimulationConfig

STATS_S = 1.0
PACKAGE_URI = 1  # /5/0/1


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def stats_line(sim: Simulation) -> str:
    s = sim.stats
    return "STATS " + json.dumps({
        "t": time.time(), "registered": s.registered, "online": s.online, "fw_blocks": s.fw_blocks,
        "fw_downloaded": s.fw_downloaded, "fw_updated": s.fw_updated, "fw_failed": s.fw_failed,
        "retransmissions": s.retransmissions, "timeouts": s.timeouts, "cpu_s": round(_cpu_s(), 2)})


async def report(sim: Simulation) -> None:
    while True:
        print(stats_line(sim), flush=True)
        await asyncio.sleep(STATS_S)


async def pull(sim: Simulation, uri: str, count: int, concurrency: int) -> dict:
    """`count` devices download `uri`, `concurrency` at a time; polled every 10 ms for ends."""
    devices = list(sim.devices[:count])
    blocks0, cpu0, t0 = sim.stats.fw_blocks, _cpu_s(), time.perf_counter()
    active: list = []
    ok = failed = 0
    write = FIRMWARE_RESOURCES[PACKAGE_URI].write
    while devices or active:
        while devices and len(active) < concurrency:
            device = devices.pop()
            try:
                write(device, uri)
                active.append(device)
            except Exception as exc:  # noqa: BLE001 - reported, the bench goes on
                print(f"pull refused by {device.endpoint}: {exc!r}", file=sys.stderr)
                failed += 1
        await asyncio.sleep(0.01)
        still = []
        for device in active:
            state = device.fw.state
            if state == DOWNLOADING:
                still.append(device)
            elif state == DOWNLOADED:
                ok += 1
            else:
                failed += 1
        active = still
    seconds = time.perf_counter() - t0
    blocks = sim.stats.fw_blocks - blocks0
    return {"devices": count, "concurrency": concurrency, "downloaded": ok, "failed": failed, "blocks": blocks,
            "seconds": round(seconds, 3), "blocks_per_s": round(blocks / seconds, 1),
            "cpu_s": round(_cpu_s() - cpu0, 2)}


async def control(sim: Simulation) -> None:
    await sim.ready.wait()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        order = json.loads(line)
        if "pull" in order:
            result = await pull(sim, order["pull"], order["count"], order["concurrency"])
            print("PULLED " + json.dumps(result), flush=True)
    sim.stop()  # stdin closed: the bench is done with us


async def run(config: SimulationConfig) -> None:
    sim = Simulation(config, out=sys.stderr)
    reporter = asyncio.create_task(report(sim))
    controller = asyncio.create_task(control(sim))
    try:
        await sim.run(handle_signals=True)
    finally:
        reporter.cancel()
        controller.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.firmware.devices", description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--devices-file", required=True)
    parser.add_argument("--lights", type=int, required=True)
    parser.add_argument("--register-rate", type=float, default=1000.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = SimulationConfig(counts={"streetlight": args.lights}, server=args.server,
                              devices_file=Path(args.devices_file), start=dt.datetime(2026, 12, 7, 3, 0),
                              lifetime_s=86_400, register_rate=args.register_rate, progress_s=0,
                              max_registering=512)
    uvloop.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
