"""Audit entries and the query an admin asks of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    api_key_id: UUID | None
    actor: str
    action: str
    entity_type: str
    entity_id: str | None
    before: Any
    after: Any
    request_id: str | None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    entity_type: str | None = None
    entity_id: str | None = None
    action: str | None = None
    api_key_id: UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Entries are returned newest first; the cursor is the last id seen.
    before_id: int | None = None
    limit: int = 100
