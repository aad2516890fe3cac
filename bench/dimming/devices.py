"""The benchmark's simulated streetlights in their own process: `simulators` on uvloop.

    python -m bench.dimming.devices --server coap://127.0.0.1:5683 --devices-file lights.csv

The same devices as `fleet simulate --devices-file`, on uvloop because the devices are not what
is measured: the faster they answer, the more plainly the figures show Fleet's own limits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

import uvloop

from simulators.simulation import Simulation, SimulationConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dimming.devices", description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--devices-file", required=True)
    parser.add_argument("--lights", type=int, required=True)
    parser.add_argument("--start", default="2026-11-24T21:00", help="simulated local start time")
    parser.add_argument("--register-rate", type=float, default=1000.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = SimulationConfig(counts={"streetlight": args.lights}, server=args.server,
                              devices_file=Path(args.devices_file), start=dt.datetime.fromisoformat(args.start),
                              lifetime_s=86_400, register_rate=args.register_rate, progress_s=0,
                              max_registering=512)
    uvloop.run(Simulation(config, out=sys.stdout).run(handle_signals=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
