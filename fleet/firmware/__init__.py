"""Firmware images and the release keys that sign them."""
