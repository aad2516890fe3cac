"""Alarm benchmarks: ingest with every rule on, and a device's fault to the alarm over REST."""
