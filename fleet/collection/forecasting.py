"""Fill forecasts for planning (interface; the forecast branch implements it in the module it
chooses and keeps this function's signature)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from fleet.collection.models import FillForecast


async def forecasts(conn: asyncpg.Connection, tenant_id: UUID, *, until: datetime,
                    device_ids: Sequence[UUID] | None = None, district: str | None = None,
                    waste_kind: str | None = None) -> list[FillForecast]:
    """Each bin's forecast (the city's in-service waste bins, or those named/filtered), in a
    transaction the caller holds on the city's side of the wall."""
    raise NotImplementedError  # issue 14, forecast branch
