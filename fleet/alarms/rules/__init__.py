"""Alarm conditions per kind of device, judged from the values a device reports."""
