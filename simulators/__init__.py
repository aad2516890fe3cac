"""Simulated devices and demo data; they reach Fleet only over the wire (the seed excepted)."""
