"""Simulated bins for the forecast bench, from THE bins' fill model (`simulators.fill`, the one
the live simulated bins use): Seoul's bins as the simulators plan them, hourly readings and the
nightly fixed round from `fill_history`, and for each moment scored what the bin, left alone,
would have done next (the same model run on from its true fill, with `emptying="never"`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fleet.collection.forecast import Reading
from simulators.fill import FillModel, fill_history
from simulators.inventory import plan

INTERVAL_S = 3600.0


@dataclass
class SimBin:
    key: int
    model: FillModel
    seed: int
    start: datetime
    truth: list[float]                  # the true fill after each hour (hour k ends start + k + 1 h)
    readings: list[Reading]             # what the sensor sent then
    emptied: list[tuple[int, float]]    # (hour index, true fill right after the emptying)


def simulate(bins: int, days: int, start: datetime, seed: int = 7) -> list[SimBin]:
    """`days` of hourly readings of `bins` bins, emptied by the district's night round."""
    out = []
    for key, spec in enumerate(plan("bench", "waste_bin", range(bins), seed)):
        model = FillModel.of(spec, seed)
        history = fill_history(model, start, days, seed * 100_003 + key, INTERVAL_S, emptying="round")
        truth = [fill for _, fill in history.truth]
        index = {at: k for k, (at, _) in enumerate(history.truth)}
        emptied = [(index[at], truth[index[at]]) for at in history.emptied]
        out.append(SimBin(key, model, seed, start, truth,
                          [Reading(at, fill) for at, fill in history.readings], emptied))
    return out


def hours_to(b: SimBin, hour: int, threshold: float, horizon_h: float) -> float | None:
    """True hours from reading `hour` until the bin, left alone, would reach `threshold`, if
    within `horizon_h`: the fill model run on from its true fill then, with its own draws."""
    level = b.truth[hour]
    if level >= threshold:
        return 0.0
    at = b.start + timedelta(hours=hour + 1)
    ahead = fill_history(b.model, at, (horizon_h + 1) / 24, b.seed * 7_919 + b.key * 1_009 + hour,
                         INTERVAL_S, emptying="never", initial_percent=level)
    for k, (_, fill) in enumerate(ahead.truth):
        if fill >= threshold:
            gain = fill - level
            return k + (threshold - level) / gain if gain > 0 else k + 1.0
        level = fill
    return None
