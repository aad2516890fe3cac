"""Alarms: faults found in what devices report (and in what citizens see), and their lifecycle."""
