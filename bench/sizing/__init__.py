"""Sizing measurements (issue 18): per-device memory, CPU per Register/Update, bytes per telemetry point."""
