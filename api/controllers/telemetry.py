"""/api/v1/devices/{id}/state, /series and /registration: what devices reported, for people."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, get
from litestar.params import Parameter
from msgspec import Struct

from api.problems import problems
from fleet.access.models import Principal
from fleet.objectmodel import CATALOG
from fleet.registrations.service import RegistrationService
from fleet.telemetry.models import SeriesBucket, SeriesQuery
from fleet.telemetry.service import TelemetryService


class StateValue(Struct, omit_defaults=True):
    path: str
    value: Any
    time: datetime
    name: str | None = None
    object: str | None = None
    units: str | None = None


class DeviceState(Struct):
    device_id: UUID
    values: list[StateValue]


class SeriesPoint(Struct):
    time: datetime
    value: Any


class SeriesBucketOut(Struct):
    start: datetime
    avg: float | None
    min: float | None
    max: float | None
    count: int


class Series(Struct, omit_defaults=True):
    device_id: UUID
    path: str
    since: datetime
    until: datetime
    name: str | None = None
    units: str | None = None
    bucket_minutes: int | None = None
    points: list[SeriesPoint] | None = None
    buckets: list[SeriesBucketOut] | None = None


class RegistrationOut(Struct):
    id: str
    endpoint: str
    address: str
    port: int
    lifetime_s: int
    binding: str
    queue_mode: bool
    lwm2m_version: str
    object_links: str
    registered_at: datetime
    updated_at: datetime
    expires_at: datetime
    sms_number: str | None = None
    # Registered over coaps:// (DTLS), with the device's own credential.
    secure: bool = False


class TelemetryController(Controller):
    path = "/api/v1/devices/{device_id:uuid}"
    tags = ["telemetry"]

    @get("/state", summary="Latest value of every resource the device reported, with names and units")
    async def state(self, device_id: UUID, principal: Principal,
                    telemetry_service: TelemetryService) -> DeviceState:
        values = await telemetry_service.state(principal, device_id)
        return DeviceState(device_id, [StateValue(v.path, v.value, v.time, v.name, v.object_name, v.units)
                                       for v in values])

    @get("/series", summary="Values of one resource over a time range, raw or as avg/min/max buckets",
         responses=problems(422))
    async def series(
        self, device_id: UUID, principal: Principal, telemetry_service: TelemetryService,
        path: Annotated[str, Parameter(description="resource path, e.g. /3303/0/5700")],
        since: Annotated[datetime | None, Parameter(description="default: 24 hours ago")] = None,
        until: Annotated[datetime | None, Parameter(description="default: now")] = None,
        bucket_minutes: Annotated[int | None, Parameter(description="aggregate per N minutes")] = None,
        limit: Annotated[int, Parameter(ge=1, le=10_000)] = 10_000,
    ) -> Series:
        until = until or datetime.now(UTC)
        since = since or until - timedelta(hours=24)
        query = SeriesQuery(device_id, path, since, until, bucket_minutes, limit)
        result = await telemetry_service.series(principal, query)
        described = CATALOG.describe(path)
        series = Series(device_id, path, since, until, described.name if described else None,
                        described.units if described else None, bucket_minutes)
        if bucket_minutes:
            series.buckets = [SeriesBucketOut(b.start, b.avg, b.min, b.max, b.count)
                              for b in result if isinstance(b, SeriesBucket)]
        else:
            series.points = [SeriesPoint(p.time, p.value) for p in result]
        return series

    @get("/registration", summary="The device's current LwM2M registration")
    async def registration(self, device_id: UUID, principal: Principal,
                           registration_service: RegistrationService) -> RegistrationOut:
        r = await registration_service.for_device(principal, device_id)
        return RegistrationOut(r.id, r.endpoint, r.address, r.port, r.lifetime_s, r.binding,
                               r.queue_mode, r.lwm2m_version, r.object_links, r.registered_at,
                               r.updated_at, r.expires_at, r.sms_number, r.secure)
