"""/api/v1/bins/forecast and /api/v1/devices/{id}/forecast: how full the city's bins will be."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, get
from litestar.params import Parameter
from msgspec import Meta, Struct

from api.problems import problems
from fleet.access.models import Principal
from fleet.collection.forecast_service import ForecastService
from fleet.collection.models import FillForecast

Q = Annotated[str | None, Parameter(required=False)]
Until = Annotated[datetime | None, Parameter(
    required=False, description="when `fill_until` is expected (ISO 8601 with offset); default now + 24 h, "
                                "at most 14 days ahead")]
Hours = Annotated[float | None, Meta(description="hours from now; null: not within the horizon "
                                                 "(`until`, at least 72 h)")]


class BinForecast(Struct):
    device_id: UUID
    endpoint: str | None
    district: str | None
    waste_kind: str | None
    fill_now: Annotated[float | None, Meta(description="the last fill reading, percent")]
    fill_at: Annotated[datetime | None, Meta(description="when it was read (or when the bin was emptied since)")]
    until: datetime
    fill_until: Annotated[float | None, Meta(description="fill expected at `until`, percent")]
    rate_per_hour: Annotated[float | None, Meta(description="mean rate over the next day, percent per hour")]
    threshold_percent: float
    hours_to_threshold: Hours
    hours_to_threshold_low: Annotated[float | None, Meta(description="early edge of the 80 % band")]
    hours_to_threshold_high: Annotated[float | None, Meta(description="late edge of the 80 % band")]
    hours_to_full: Hours
    last_emptied_at: datetime | None
    basis: Annotated[Literal["bin", "district", "city", "none"], Meta(
        description="bin: its own history; district/city: too little history, the mean rates of its "
                    "district's (else the city's) bins of its waste kind; none: nothing to go on")]


class BinForecastPage(Struct):
    items: list[BinForecast]
    next_cursor: str | None


def forecast_out(f: FillForecast) -> BinForecast:
    return BinForecast(f.device_id, f.endpoint, f.district, f.waste_kind, f.fill_now, f.fill_at, f.until,
                       f.fill_until, f.rate_per_hour, f.threshold_percent, f.hours_to_threshold,
                       f.hours_to_threshold_low, f.hours_to_threshold_high, f.hours_to_full,
                       f.last_emptied_at, f.basis)  # type: ignore[arg-type]


class ForecastController(Controller):
    path = "/api/v1"
    tags = ["waste collection"]

    @get("/bins/forecast", summary="Each waste bin's fill now, expected at `until`, and time to threshold and full",
         description="Bins that are not decommissioned (maintenance included), by id, cursor-paged. Rates are "
                     "learned per hour of the week from each bin's fill readings; see docs/collection.md, \"Fill forecasts\".",
         responses=problems(403, 422))
    async def bins(self, principal: Principal, forecast_service: ForecastService,
                   district: Q = None, waste_kind: Q = None, until: Until = None, cursor: Q = None,
                   limit: Annotated[int, Parameter(ge=1, le=1000)] = 100) -> BinForecastPage:
        items, next_cursor = await forecast_service.bins(principal, until=until, district=district,
                                                         waste_kind=waste_kind, cursor=cursor, limit=limit)
        return BinForecastPage([forecast_out(f) for f in items], next_cursor)

    @get("/devices/{device_id:uuid}/forecast", summary="One waste bin's fill forecast",
         description="404 for a device the city does not have; 409 for a device that is not a waste bin "
                     "or is decommissioned.",
         responses=problems(403, 404, 409, 422))
    async def device(self, device_id: UUID, principal: Principal, forecast_service: ForecastService,
                     until: Until = None) -> BinForecast:
        return forecast_out(await forecast_service.device(principal, device_id, until=until))
