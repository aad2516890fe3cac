"""Loading the recorded LwM2M payloads of tests/fixtures/lwm2m (hex files may carry # comments)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lwm2m"


def read_payload(name: str) -> bytes:
    path = FIXTURES / name
    if path.suffix != ".hex":
        return path.read_bytes()
    lines = (line.split("#", 1)[0] for line in path.read_text().splitlines())
    return bytes.fromhex("".join("".join(lines).split()))


@pytest.fixture
def payload() -> Callable[[str], bytes]:
    return read_payload
