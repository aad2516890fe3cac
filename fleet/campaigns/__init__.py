"""Firmware campaigns: waves, thresholds, maintenance windows, each device's way to the new version."""
