"""Simulated streetlights for the sizing run: `simulators` on uvloop, a lifetime of our choosing.

    python -m bench.sizing.devices --server coap://127.0.0.1:5683 --devices-file part.csv --lights N --lifetime 120

Reports stay rare (one a day) so that what the listener does is Register, its follow-ups, Update.
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
    parser = argparse.ArgumentParser(prog="python -m bench.sizing.devices", description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--devices-file", required=True)
    parser.add_argument("--lights", type=int, required=True)
    parser.add_argument("--lifetime", type=int, default=120, help="registration lifetime, s (Update at 80-90 %%)")
    parser.add_argument("--register-rate", type=float, default=1000.0)
    parser.add_argument("--security", choices=("nosec", "psk"), default="nosec")
    parser.add_argument("--credentials-file", help="the devices' keys (simulators.credentials), for psk")
    parser.add_argument("--secure-server", help="Fleet's coaps:// URI, for psk")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = SimulationConfig(counts={"streetlight": args.lights}, server=args.server,
                              devices_file=Path(args.devices_file), start=dt.datetime(2026, 11, 24, 12),
                              lifetime_s=args.lifetime, report_interval_s=86_400.0,
                              register_rate=args.register_rate, progress_s=0, max_registering=512,
                              security=args.security,
                              credentials_file=Path(args.credentials_file) if args.credentials_file else None,
                              secure_server=args.secure_server)
    uvloop.run(Simulation(config, out=sys.stdout).run(handle_signals=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
