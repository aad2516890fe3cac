"""What a test does when something it needs from outside the repository is missing: skip on a
developer's machine, fail under CI (``CI=true``), where everything must be there."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI: a skipped test there would pass CI untested."""
    if in_ci():
        pytest.fail(f"{reason}; CI must provide it", pytrace=False)
    pytest.skip(reason)
