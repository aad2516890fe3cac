"""/api/v1/overview and /api/v1/map: the control room's figures and its map, aggregated on the server."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter

from api.problems import problems
from fleet.access.models import Principal
from fleet.overview.models import DistrictOutlines, Districts, MapView, Overview
from fleet.overview.service import OverviewService


class OverviewController(Controller):
    path = "/api/v1"
    tags = ["overview"]

    @get("/overview", summary="The city at a glance: devices, active alarms, lighting, bins, access points, "
                              "campaigns under way", responses=problems(403))
    async def overview(self, principal: Principal, overview_service: OverviewService) -> Overview:
        return await overview_service.overview(principal)

    @get("/map", summary="Devices in view, or grid clusters of them when zoomed out", responses=problems(403, 422))
    async def map(
        self, principal: Principal, overview_service: OverviewService,
        bbox: Annotated[str | None, Parameter(description="min_lon,min_lat,max_lon,max_lat")] = None,
        zoom: Annotated[str | None, Parameter(description="map zoom, 0-22")] = None,
    ) -> MapView:
        return await overview_service.map(principal, bbox, zoom)

    @get("/map/districts", summary="District outlines (GeoJSON): the hull of each district's devices",
         responses=problems(403))
    async def districts(self, principal: Principal, overview_service: OverviewService) -> DistrictOutlines:
        return await overview_service.districts(principal)

    @get("/districts", summary="Every district of the city with its devices per kind and status",
         responses=problems(403))
    async def district_counts(self, principal: Principal, overview_service: OverviewService) -> Districts:
        return await overview_service.district_counts(principal)
