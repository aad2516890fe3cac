"""`python -m bench.forecast`: mean absolute error of the predicted time to threshold on two
simulated weeks (the bins' fill model of `simulators.fill`), Fleet's forecast
(fleet.collection.forecast, the code the service runs) beside the naive one (the bin's own
average filling speed since it was last emptied, /3435/0/8)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bench.forecast.simulate import hours_to, simulate
from fleet.collection.forecast import DEFAULT_SD, effective_rates, learn, predict
from simulators.fill import SENSOR_SIGMA, SPIKE_CHANCE

TZ = ZoneInfo("Asia/Seoul")
START = datetime(2026, 11, 2, tzinfo=TZ)   # a Monday, 00:00 local
CAP_H = 14 * 24.0                           # a forecast of "never" counts as this many hours


def naive_hours(b, hour: int, reading: float, threshold: float) -> float:
    """The last observed rate: fill gained since the last emptying over the hours since it
    (what the bin itself reports as its average filling speed), else over the last day."""
    last = max((e for e in b.emptied if e[0] <= hour - 3), default=None, key=lambda e: e[0])
    if last is not None and hour - last[0] <= 72:
        since, base = last[0], last[1]
    else:
        since, base = hour - 24, b.readings[hour - 24].fill
    rate = (reading - base) / (hour - since)
    if reading >= threshold:
        return 0.0
    return min(CAP_H, (threshold - reading) / rate) if rate > 0 else CAP_H


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forecast", description=__doc__)
    parser.add_argument("--bins", type=int, default=300)
    parser.add_argument("--every-hours", type=int, default=6, help="a prediction every N hours of week 2")
    parser.add_argument("--threshold", type=float, default=80.0)
    parser.add_argument("--max-hours", type=float, default=96.0,
                        help="score points whose true time to threshold is at most this")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    bins = simulate(args.bins, 14, START, args.seed)
    fleet_err, naive_err, banded, naive_never, with_rate = [], [], 0, 0, []
    for b in bins:
        week1 = [r for r in b.readings if r.at < START + timedelta(days=7)]
        profile = learn(None, week1, [], TZ).profile
        for hour in range(7 * 24, 14 * 24, args.every_hours):
            reading = b.readings[hour]
            new = [r for r in b.readings[:hour + 1] if profile.through is None or r.at > profile.through]
            profile = learn(profile, new, [], TZ).profile
            truth = hours_to(b, hour, args.threshold, args.max_hours)
            if truth is None or truth > args.max_hours or reading.fill >= args.threshold:
                continue
            p = predict(effective_rates(profile), profile.residual_sd or DEFAULT_SD, reading.fill,
                        reading.at, reading.at, reading.at + timedelta(hours=1), args.threshold, TZ,
                        horizon=reading.at + timedelta(hours=CAP_H))
            ours = CAP_H if p.hours_to_threshold is None else p.hours_to_threshold
            low = p.hours_to_threshold_low if p.hours_to_threshold_low is not None else CAP_H
            high = p.hours_to_threshold_high if p.hours_to_threshold_high is not None else CAP_H
            banded += low <= truth <= high
            fleet_err.append(abs(ours - truth))
            naive = naive_hours(b, hour, reading.fill, args.threshold)
            naive_never += naive >= CAP_H
            if naive < CAP_H:
                with_rate.append((abs(ours - truth), abs(naive - truth)))
            naive_err.append(abs(naive - truth))
    n = len(fleet_err)
    fleet_mae, naive_mae = statistics.fmean(fleet_err), statistics.fmean(naive_err)
    print(f"bins {args.bins}, two weeks of hourly readings (simulators.fill: sensor sd {SENSOR_SIGMA:g} %, "
          f"{SPIKE_CHANCE:.1%} spikes), "
          f"threshold {args.threshold:g} %, {n} predictions in week 2 "
          f"(true time to threshold <= {args.max_hours:g} h)")
    print(f"fleet  MAE {fleet_mae:6.2f} h   median {statistics.median(fleet_err):6.2f} h   "
          f"truth inside the 80 % band {banded / n:.0%}")
    print(f"naive  MAE {naive_mae:6.2f} h   median {statistics.median(naive_err):6.2f} h   "
          f"'never' (no rise yet, counted as {CAP_H:g} h) {naive_never / n:.0%}")
    print(f"only where the naive forecast had a rising rate ({len(with_rate)}): fleet MAE "
          f"{statistics.fmean(f for f, _ in with_rate):.2f} h, naive {statistics.fmean(n for _, n in with_rate):.2f} h")
    print(f"ratio fleet/naive {fleet_mae / naive_mae:.2f} (target <= 0.50); "
          f"{time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
