"""Writing audit entries inside the mutating transaction, and reading them back for admins."""

from __future__ import annotations

from typing import Any

import asyncpg

from fleet.access.models import Permission, Principal
from fleet.audit.models import AuditEntry, AuditQuery
from fleet.audit.repository import AuditRepository
from fleet.db import Database
from fleet.errors import PermissionDenied


async def record(conn: asyncpg.Connection, principal: Principal, action: str, entity_type: str,
                 entity_id: object | None, before: Any = None, after: Any = None, *,
                 actor: str | None = None) -> None:
    """Append one entry in the caller's transaction, so the entry and the change commit together.
    `actor` names the caller where the key's id alone would not say who (a reporting app)."""
    await AuditRepository(conn).append(
        principal.tenant_id, principal.api_key_id, actor or principal.actor, action, entity_type,
        None if entity_id is None else str(entity_id), before, after, principal.request_id)


async def record_many(conn: asyncpg.Connection, principal: Principal, action: str, entity_type: str,
                      entities: list[Any]) -> None:
    """One entry per created entity (each with an `id`), written in one COPY."""
    await AuditRepository(conn).append_many([
        (principal.tenant_id, principal.api_key_id, principal.actor, action, entity_type,
         str(entity.id), None, entity, principal.request_id) for entity in entities])


class AuditService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def search(self, principal: Principal, query: AuditQuery) -> list[AuditEntry]:
        if not principal.can(Permission.READ_AUDIT):
            raise PermissionDenied("only admins may read the audit log")
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await AuditRepository(conn).search(principal.tenant_id, query)
