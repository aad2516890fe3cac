"""The composition root: a component that ends stops the process with a non-zero status."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from api.runtime import until_stopped


async def test_a_component_that_ends_stops_the_others_and_the_process_with_status_1():
    cancelled = asyncio.Event()

    async def http_server() -> None:
        raise OSError("address already in use")

    async def coap_listener() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    with capture_logs() as logs:
        assert await until_stopped(http_server, coap_listener) == 1
    assert cancelled.is_set()
    stopped = [e for e in logs if e["event"] == "component stopped; stopping the process"]
    assert len(stopped) == 1 and isinstance(stopped[0]["exc_info"], OSError)
