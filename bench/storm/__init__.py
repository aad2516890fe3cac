"""bench/storm: N devices register at once while the REST API is under a fixed load."""
