"""A crew as the city names it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Crew:
    id: UUID
    tenant_id: UUID
    name: str
    created_at: datetime
