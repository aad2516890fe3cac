"""Ingest benchmarks: how many LwM2M Send requests per second reach storage."""
