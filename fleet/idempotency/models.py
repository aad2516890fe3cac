"""What a claim on an Idempotency-Key found."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    CLAIMED = "claimed"          # first use: run the request, then store its response
    REPLAY = "replay"            # answered before: send the stored response again
    MISMATCH = "mismatch"        # the key was used for another request
    IN_PROGRESS = "in_progress"  # the first request with this key is still running


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: Outcome
    response: StoredResponse | None = None
