"""/api/v1/devices: the registry over REST, with import and export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.response import Stream

from api.openapi import DeviceExportOperation, DeviceImportOperation
from api.problems import problems
from api.schemas import (Device, DeviceCreate, DevicePage, DeviceUpdate, ImportResult, KindFilter,
                         StatusFilter, device_fields, device_out)
from fleet.access.models import Principal
from fleet.errors import FieldError, ValidationFailed
from fleet.registry.filters import parse_filter
from fleet.registry.importing import csv_header, csv_line, geojson_feature
from fleet.registry.models import DeviceFilter
from fleet.registry.service import DeviceService

CSV_TYPES = ("text/csv", "application/csv")
GEOJSON_TYPES = ("application/geo+json", "application/json")


def filter_from_query(kind: str | None, status: str | None, district: str | None, tag: str | None,
                      firmware: str | None, bbox: str | None, near: str | None,
                      radius_m: str | None, group_id: str | None) -> DeviceFilter:
    return parse_filter({"kind": kind, "status": status, "district": district, "tag": tag,
                         "firmware": firmware, "bbox": bbox, "near": near, "radius_m": radius_m,
                         "group_id": group_id})


Q = Annotated[str | None, Parameter(required=False)]


class DeviceController(Controller):
    path = "/api/v1/devices"
    tags = ["devices"]

    @post("/", summary="Register a device in the caller's city", responses=problems(403, 409, 422))
    async def create(self, data: DeviceCreate, principal: Principal,
                     device_service: DeviceService) -> Device:
        return device_out(await device_service.create(principal, device_fields(data)))

    @get("/", summary="List devices with filters and cursor pagination", responses=problems(404, 422))
    async def list_devices(
        self, principal: Principal, device_service: DeviceService,
        kind: KindFilter = None, status: StatusFilter = None, district: Q = None, tag: Q = None, firmware: Q = None,
        bbox: Annotated[str | None, Parameter(description="min_lon,min_lat,max_lon,max_lat")] = None,
        near: Annotated[str | None, Parameter(description="lat,lon")] = None,
        radius_m: Annotated[str | None, Parameter(description="metres around `near` (default 500)")] = None,
        group_id: Q = None, cursor: Q = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> DevicePage:
        device_filter = filter_from_query(kind, status, district, tag, firmware, bbox, near, radius_m, group_id)
        page = await device_service.list(principal, device_filter, cursor=cursor, limit=limit)
        return DevicePage([device_out(d) for d in page.items], page.next_cursor)

    @get("/export", summary="Export the filtered list as CSV or GeoJSON", responses=problems(404, 422),
         operation_class=DeviceExportOperation)
    async def export(
        self, principal: Principal, device_service: DeviceService,
        format: Literal["csv", "geojson"] = "csv",  # noqa: A002 - the query parameter's name
        kind: KindFilter = None, status: StatusFilter = None, district: Q = None, tag: Q = None, firmware: Q = None,
        bbox: Q = None, near: Q = None, radius_m: Q = None, group_id: Q = None,
    ) -> Stream:
        device_filter = filter_from_query(kind, status, district, tag, firmware, bbox, near, radius_m, group_id)
        if format == "csv":
            # With each device's credential columns (never a key).
            rows = device_service.export_with_security(principal, device_filter)
            # Pull the first device before answering, so a bad filter still gets a proper error status.
            first_row = await anext(rows, None)
            # Litestar adds "; charset=utf-8" to every text/* type itself.
            return Stream(_csv(first_row, rows), media_type="text/csv",
                          headers={"Content-Disposition": 'attachment; filename="devices.csv"'})
        devices = device_service.export(principal, device_filter)
        first = await anext(devices, None)
        return Stream(_geojson(first, devices), media_type="application/geo+json",
                      headers={"Content-Disposition": 'attachment; filename="devices.geojson"'})

    @post("/import", summary="Import devices from CSV or GeoJSON, all or nothing", status_code=201,
          responses=problems(400, 403, 409, 413, 415, 422), operation_class=DeviceImportOperation)
    async def import_devices(self, request: Request, principal: Principal,
                             device_service: DeviceService) -> ImportResult:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        if content_type in CSV_TYPES:
            try:
                text = body.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ValidationFailed("CSV must be UTF-8", [FieldError("body", "not UTF-8")]) from None
            ids = await device_service.import_csv(principal, text)
        elif content_type in GEOJSON_TYPES:
            ids = await device_service.import_geojson(principal, body)
        else:
            raise HTTPException(status_code=415, detail="send text/csv or application/geo+json")
        return ImportResult(len(ids), ids)

    @get("/{device_id:uuid}", summary="One device")
    async def get_device(self, device_id: UUID, principal: Principal,
                         device_service: DeviceService) -> Device:
        return device_out(await device_service.get(principal, device_id))

    @patch("/{device_id:uuid}", summary="Change some fields of a device", responses=problems(403, 409, 422))
    async def update(self, device_id: UUID, data: DeviceUpdate, principal: Principal,
                     device_service: DeviceService) -> Device:
        return device_out(await device_service.update(principal, device_id, device_fields(data)))

    @delete("/{device_id:uuid}", summary="Decommission a device (its history is kept)", status_code=200,
            responses=problems(403, 409))
    async def decommission(self, device_id: UUID, principal: Principal,
                           device_service: DeviceService) -> Device:
        return device_out(await device_service.decommission(principal, device_id))


async def _csv(first, rest: AsyncIterator) -> AsyncIterator[str]:
    yield csv_header()
    if first is None:
        return
    yield csv_line(*first)
    async for device, security in rest:
        yield csv_line(device, security)


async def _geojson(first, rest: AsyncIterator) -> AsyncIterator[bytes]:
    yield b'{"type":"FeatureCollection","features":['
    if first is not None:
        yield msgspec.json.encode(geojson_feature(first))
        async for device in rest:
            yield b"," + msgspec.json.encode(geojson_feature(device))
    yield b"]}"


__all__ = ["DeviceController", "Response"]
