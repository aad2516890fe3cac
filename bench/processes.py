"""Ending a benchmark's child processes: politely first, then for sure."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM (a Fleet node drains, a simulator deregisters), then SIGKILL after `grace_s`."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
