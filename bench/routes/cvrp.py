"""A TSPLIB CVRP instance (`.vrp`, best known cost from the `.sol` beside it or the COMMENT line),
as the planner's routing problem, and the same instance solved by OR-Tools."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from fleet.collection.routing_problem import Fleet, Matrix, Place, RoutingProblem, Visit

# Cost per km such that one unit of the instance's distance costs one: cost = distance.
PER_UNIT = 1000.0


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    capacity: int
    coords: list[tuple[float, float]]   # depot first
    demands: list[int]                  # depot first (0)
    best_known: float | None
    trucks: int | None                  # the "-kN" of the name: the fewest trucks known to do

    @property
    def distances(self) -> list[list[int]]:
        return [[round(math.dist(a, b)) for b in self.coords] for a in self.coords]


def read(path: Path) -> Instance:
    section, capacity, comment = None, 0, ""
    coords: dict[int, tuple[float, float]] = {}
    demands: dict[int, int] = {}
    depots: list[int] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line == "EOF":
            continue
        if ":" in line and not line[0].isdigit() and not line.startswith("-"):
            key, _, value = line.partition(":")
            key = key.strip().upper()
            if key == "CAPACITY":
                capacity = int(value)
            elif key == "COMMENT":
                comment = value
            section = None
            continue
        if line.endswith("SECTION"):
            section = line.split()[0]
            continue
        fields = line.split()
        if section == "NODE_COORD_SECTION":
            coords[int(fields[0])] = (float(fields[1]), float(fields[2]))
        elif section == "DEMAND_SECTION":
            demands[int(fields[0])] = int(fields[1])
        elif section == "DEPOT_SECTION" and int(fields[0]) > 0:
            depots.append(int(fields[0]))
    depot = depots[0] if depots else min(coords)
    order = [depot] + [n for n in sorted(coords) if n != depot]
    trucks = re.search(r"-k(\d+)", path.stem)
    return Instance(path.stem, capacity, [coords[n] for n in order], [demands.get(n, 0) for n in order],
                    best_known(path, comment), int(trucks.group(1)) if trucks else None)


def best_known(path: Path, comment: str) -> float | None:
    solution = path.with_suffix(".sol")
    if solution.exists():
        for line in reversed(solution.read_text().splitlines()):
            if line.strip().lower().startswith("cost"):
                return float(line.split()[1])
    found = re.search(r"(?:Optimal|Best)[ a-z]*value:\s*([0-9.]+)", comment, re.IGNORECASE)
    return float(found.group(1)) if found else None


def as_problem(instance: Instance) -> tuple[RoutingProblem, Matrix]:
    """No shifts, as many trucks as customers, cost = distance. The points the solver asks for are
    the depot then the customers, which is the instance's own order."""
    x, y = instance.coords[0]
    fleet = Fleet("trucks", Place("depot", y, x), instance.capacity, count=len(instance.coords) - 1,
                  shift_start_s=0, shift_end_s=10**9, cost_per_km=PER_UNIT, cost_per_hour=0.0)
    visits = tuple(Visit(Place(str(n), y, x), litres=demand, service_s=0)
                   for n, ((x, y), demand) in enumerate(zip(instance.coords, instance.demands, strict=True))
                   if n > 0)
    distances = instance.distances
    return RoutingProblem((fleet,), visits), Matrix(distances, [[0] * len(row) for row in distances])


def solve_with_ortools(instance: Instance, seconds: float) -> float | None:
    """Guided local search from the cheapest-arc start; a few trucks more than the fewest known,
    since OR-Tools needs a fixed count and slows down with a fleet as large as the customers."""
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    n = len(instance.coords)
    trucks = instance.trucks + max(2, instance.trucks // 5) if instance.trucks else n - 1
    manager = pywrapcp.RoutingIndexManager(n, trucks, 0)
    routing = pywrapcp.RoutingModel(manager)
    transit = routing.RegisterTransitMatrix(instance.distances)
    routing.SetArcCostEvaluatorOfAllVehicles(transit)
    demand = routing.RegisterUnaryTransitVector(instance.demands)
    routing.AddDimensionWithVehicleCapacity(demand, 0, [instance.capacity] * trucks, True, "load")
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    params.time_limit.FromMilliseconds(int(seconds * 1000))
    solution = routing.SolveWithParameters(params)
    return float(solution.ObjectiveValue()) if solution else None
