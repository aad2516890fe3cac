"""Fixtures for protocol tests: a real CoAP listener on a UDP port, and a CoAP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiocoap
import pytest

from protocols.lwm2m.listener import Listener, open_listener


@pytest.fixture
async def listener(db) -> AsyncIterator[Listener]:
    async with open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0),
                             sweep_interval_s=0.2) as running:
        yield running


@pytest.fixture
async def coap_client() -> AsyncIterator[aiocoap.Context]:
    context = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        yield context
    finally:
        await context.shutdown()
