"""`python -m bench.routes` as the issue states it: one line per instance, then the mean gap."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.routes import cvrp

TINY = """NAME : tiny-n7-k2
COMMENT : (a test town, Optimal value: 999)
TYPE : CVRP
DIMENSION : 7
EDGE_WEIGHT_TYPE : EUC_2D
CAPACITY : 10
NODE_COORD_SECTION
 1 50 50
 2 10 10
 3 12 14
 4 90 90
 5 88 85
 6 10 90
 7 92 12
DEMAND_SECTION
 1 0
 2 4
 3 5
 4 4
 5 5
 6 6
 7 3
DEPOT_SECTION
 1
 -1
EOF
"""


def test_an_instance_is_read_with_its_best_known_cost(tmp_path: Path):
    (tmp_path / "tiny-n7-k2.vrp").write_text(TINY)
    instance = cvrp.read(tmp_path / "tiny-n7-k2.vrp")
    assert instance.capacity == 10 and instance.trucks == 2 and instance.best_known == 999
    assert instance.coords[0] == (50, 50) and instance.demands == [0, 4, 5, 4, 5, 6, 3]
    assert instance.distances[1][2] == round((2**2 + 4**2) ** 0.5)
    (tmp_path / "tiny-n7-k2.sol").write_text("Route #1: 1 2\nRoute #2: 3 4 5 6\nCost 321\n")
    assert cvrp.read(tmp_path / "tiny-n7-k2.vrp").best_known == 321


def test_the_bench_prints_a_line_per_instance_and_the_mean_gap(tmp_path: Path):
    (tmp_path / "tiny-n7-k2.vrp").write_text(TINY)
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "bench.routes", "--instances", str(tmp_path), "--seconds", "1"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=True)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2, done.stdout
    line = re.fullmatch(r"tiny-n7-k2  cost (\d+)  best 999  gap (-?\d+\.\d\d)%  \|  "
                        r"or-tools (\d+)  gap (-?\d+\.\d\d)%  \|  .*", lines[0])
    assert line, lines[0]
    expected_gap = f"{100 * (int(line.group(1)) - 999) / 999:.2f}"
    assert line.group(2) == expected_gap
    assert lines[1] == f"mean gap {expected_gap}%"
