"""Ending a benchmark's child processes: politely first, then for sure."""

from __future__ import annotations

import asyncio
import subprocess


def stop(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM (a Fleet node drains, a simulator deregisters), then SIGKILL after `grace_s`."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def ended(process: asyncio.subprocess.Process, grace_s: float = 30) -> None:
    """`stop` for a child of asyncio: SIGTERM (unless it has ended), SIGKILL after `grace_s`."""
    if process.returncode is None:
        process.terminate()
    try:
        async with asyncio.timeout(grace_s):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
