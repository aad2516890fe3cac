"""python -m bench.routes [--instances DIR] [--seconds N] [--city]: one line per CVRP instance
(PyVRP through the planner's solver beside OR-Tools, both given N seconds), then `mean gap X.XX%`;
`--city` solves a city-scale day instead (2,000 bins) beside a nearest-neighbour round."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.routes import cvrp
from fleet.collection.solver import solve

DEFAULT_INSTANCES = Path(__file__).resolve().parents[2] / ".." / "shared" / "cvrp"


def gap(cost: float | None, best: float | None) -> str:
    if cost is None or not best:
        return "n/a"
    return f"{100 * (cost - best) / best:.2f}%"


def run_instances(directory: Path, seconds: float, seed: int, ortools: bool) -> int:
    paths = sorted(directory.glob("*.vrp"))
    if not paths:
        print(f"no .vrp files in {directory}")
        return 1
    gaps: list[float] = []
    for path in paths:
        instance = cvrp.read(path)
        problem, matrix = cvrp.as_problem(instance)
        started = time.monotonic()
        solution = solve(problem, matrix, time_limit_s=seconds, seed=seed)
        took = time.monotonic() - started
        cost = round(solution.cost) if solution.feasible and not solution.unassigned else None
        other = cvrp.solve_with_ortools(instance, seconds) if ortools else None
        best = instance.best_known
        if cost is not None and best:
            gaps.append(100 * (cost - best) / best)
        print(f"{instance.name}  cost {cost if cost is not None else 'infeasible'}  "
              f"best {f'{best:g}' if best else 'n/a'}  gap {gap(cost, best)}  |  "
              f"or-tools {'n/a' if other is None else f'{other:g}'}  gap {gap(other, best)}  |  "
              f"{took:.1f} s, {solution.iterations} iterations", flush=True)
    print(f"mean gap {sum(gaps) / len(gaps):.2f}%" if gaps else "mean gap n/a")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routes", description=__doc__)
    parser.add_argument("--instances", type=Path, default=DEFAULT_INSTANCES.resolve(),
                        help="directory of TSPLIB .vrp files (default ../shared/cvrp)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per instance and solver")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ortools", action="store_true", help="skip the OR-Tools baseline")
    parser.add_argument("--city", action="store_true", help="the city-scale case instead of the instances")
    parser.add_argument("--bins", type=int, default=2000, help="bins in the city case")
    parser.add_argument("--trucks", type=int, default=12,
                        help="trucks in the city case (fewer than it needs: an over-full day)")
    args = parser.parse_args(argv)
    if args.city:
        from bench.routes.city import run_city
        return run_city(args.bins, args.seconds, args.seed, args.trucks)
    return run_instances(args.instances, args.seconds, args.seed, not args.no_ortools)
