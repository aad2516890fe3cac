"""bench/routes: the route solver on standard CVRP instances beside OR-Tools, and on a city."""
