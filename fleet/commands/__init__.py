"""Downlink: operators' and the scheduler's commands to devices, queued, retried and tracked."""
