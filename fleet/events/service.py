"""Publishing events inside the changing transaction, and reading the log back per city."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from fleet.events.repository import EventRepository


async def publish(conn: asyncpg.Connection, tenant_id: UUID, kind: str, subject_type: str,
                  subject_id: object, payload: dict[str, Any]) -> None:
    """Append one event in the caller's transaction: it exists if and only if the change commits,
    and every node hears of it (NOTIFY `fleet_events`) at that commit."""
    await EventRepository(conn).append(tenant_id, kind, subject_type, subject_id, payload)
