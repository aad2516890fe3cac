"""Fill forecasts for people: the city's bins or one bin, read on the city's side of the wall."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from fleet import cursors
from fleet.access.models import Permission, Principal
from fleet.collection.forecast_repository import ForecastRepository
from fleet.collection.forecasting import forecasts
from fleet.collection.models import FillForecast
from fleet.db import Database
from fleet.errors import Conflict, FieldError, NotFound, ValidationFailed
from fleet.registry.repository import DeviceRepository
from fleet.registry.service import require

DEFAULT_AHEAD = timedelta(hours=24)
MAX_AHEAD = timedelta(days=14)
CURSOR_KIND = b"fc:"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ForecastService:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.db = db
        self.clock = clock

    def _until(self, now: datetime, until: datetime | None) -> datetime:
        if until is None:
            return now + DEFAULT_AHEAD
        if until.tzinfo is None:
            raise ValidationFailed("invalid until", [FieldError("until", "needs a UTC offset")])
        if not now < until <= now + MAX_AHEAD:
            raise ValidationFailed("invalid until", [FieldError(
                "until", f"must be in the future and within {MAX_AHEAD.days} days")])
        return until

    async def bins(self, principal: Principal, *, until: datetime | None = None, district: str | None = None,
                   waste_kind: str | None = None, cursor: str | None = None, limit: int = 100
                   ) -> tuple[list[FillForecast], str | None]:
        """A page of the city's bins (by id), with the cursor of the next page or None."""
        require(principal, Permission.READ)
        now = self.clock()
        until = self._until(now, until)
        after = UUID(cursors.decode(CURSOR_KIND, cursor, list[str])[0]) if cursor else None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            await DeviceRepository(conn).require_known_district(principal.tenant_id, district)
            items = await forecasts(conn, principal.tenant_id, until=until, district=district,
                                    waste_kind=waste_kind, now=now, after=after, limit=limit + 1)
        more = len(items) > limit
        items = items[:limit]
        return items, cursors.encode(CURSOR_KIND, [str(items[-1].device_id)]) if more else None

    async def device(self, principal: Principal, device_id: UUID, *, until: datetime | None = None
                     ) -> FillForecast:
        require(principal, Permission.READ)
        now = self.clock()
        until = self._until(now, until)
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            row = await ForecastRepository(conn).device_kind(principal.tenant_id, device_id)
            if row is None:
                raise NotFound(f"device {device_id} not found")
            if row["kind"] != "waste_bin":
                raise Conflict(f"device {device_id} is a {row['kind']}, not a waste bin: it has no fill forecast")
            if row["status"] == "decommissioned":
                raise Conflict(f"device {device_id} is decommissioned: it has no fill forecast")
            items = await forecasts(conn, principal.tenant_id, until=until, device_ids=[device_id], now=now)
        return items[0]
