"""Firmware delivery benchmarks: Block2 blocks served per second against a bare aiocoap server."""
