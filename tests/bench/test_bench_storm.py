"""`python -m bench.storm` as the issue states it: its last line holds `p99 during storm X ms` and `online in Y s`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.storm.report import latency


def test_requests_count_in_the_phase_they_were_due_in_however_late_answered():
    records = [[0.5, 0.010, 200], [1.0, 0.020, 200], [1.5, 3.0, 200], [2.0, 0.5, 0], [9.0, 0.001, 200]]
    during = latency(records, 1.0, 2.5)
    assert (during.requests, during.failed) == (3, {"no answer": 1})
    assert (during.p50_ms, during.p99_ms, during.max_ms) == (500.0, 3000.0, 3000.0)
    assert latency(records, 0.0, 1.0).requests == 1


def test_a_tiny_storm_ends_with_the_contract_line():
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-m", "bench.storm", "--devices", "50", "--register-rate", "500", "--warmup", "1",
         "--before", "1", "--rest-rate", "20", "--no-baseline"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=180, check=True)
    last = done.stdout.strip().splitlines()[-1]
    assert re.search(r"p99 during storm \d+ ms", last), done.stdout
    assert re.search(r"online in \d+(\.\d+)? s \(registered and read\)", last), done.stdout
    assert re.search(r"\d+ of 50 Sends acknowledged", last), done.stdout
