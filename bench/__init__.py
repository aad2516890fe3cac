"""Benchmarks and the measuring tools they share; not part of the Fleet server."""
