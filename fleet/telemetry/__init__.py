"""Telemetry: every value a device reports, in a time-partitioned store, and its latest state."""
