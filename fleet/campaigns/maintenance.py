"""The city's and its groups' maintenance windows, as the control room keeps them."""

from __future__ import annotations

from datetime import time
from uuid import UUID

import msgspec

from fleet.access.models import Permission, Principal
from fleet.audit.service import record
from fleet.campaigns.models import MaintenanceWindow, WindowCreate
from fleet.campaigns.repository import CampaignRepository
from fleet.campaigns.service import require
from fleet.db import Database
from fleet.errors import FieldError, NotFound, ValidationFailed


class MaintenanceWindowService:
    """The city's and its groups' maintenance windows: when installs may happen."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, principal: Principal, window: WindowCreate) -> MaintenanceWindow:
        require(principal, Permission.RUN_CAMPAIGNS, "manage maintenance windows")
        if window.start == window.end:
            raise ValidationFailed("invalid window", [FieldError("end", "start and end must differ")])
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = CampaignRepository(conn)
            if window.group_id is not None and not await repo.group_exists(principal.tenant_id, window.group_id):
                raise ValidationFailed("unknown group", [FieldError(
                    "group_id", f"no group {window.group_id} in this city")])
            created = await repo.insert_window(principal.tenant_id, window.group_id, window.name,
                                               _local_time(window.start), _local_time(window.end), window.weekdays)
            await record(conn, principal, "maintenance_window.create", "maintenance_window", created.id,
                         None, msgspec.to_builtins(created))
            return created

    async def list(self, principal: Principal, group_id: UUID | None = None) -> list[MaintenanceWindow]:
        require(principal, Permission.READ, "read maintenance windows")
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            return await CampaignRepository(conn).windows(principal.tenant_id, group_id)

    async def delete(self, principal: Principal, window_id: UUID) -> None:
        require(principal, Permission.RUN_CAMPAIGNS, "manage maintenance windows")
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            deleted = await CampaignRepository(conn).delete_window(principal.tenant_id, window_id)
            if deleted is None:
                raise NotFound(f"maintenance window {window_id} not found")
            await record(conn, principal, "maintenance_window.delete", "maintenance_window", window_id,
                         msgspec.to_builtins(deleted), None)


def _local_time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))
