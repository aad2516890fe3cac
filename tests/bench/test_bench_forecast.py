"""`python -m bench.forecast` on a few bins: THE fill model's bins, Fleet beside the naive forecast."""

from __future__ import annotations

from bench.forecast.__main__ import START, main
from bench.forecast.simulate import hours_to, simulate
from simulators.fill import FillModel


def test_the_bench_simulates_with_the_simulators_fill_model_and_scores_both_forecasts(capsys):
    [b] = simulate(1, 3, START, seed=5)
    assert isinstance(b.model, FillModel) and len(b.readings) == len(b.truth) == 3 * 24
    assert hours_to(b, 10, b.truth[10], 48) == 0.0                  # already there
    ahead = hours_to(b, 10, min(99.0, b.truth[10] + 5), 200)
    assert ahead is None or ahead > 0

    assert main(["--bins", "4", "--every-hours", "12"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("bins 4, ") and "simulators.fill" in out[0]
    assert out[1].startswith("fleet  MAE") and out[2].startswith("naive  MAE")
    assert out[-1].startswith("ratio fleet/naive ")
