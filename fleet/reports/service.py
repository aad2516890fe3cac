"""Filing citizens' reports against the nearest device, and reading them back as Open311 requests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from fleet.access.models import Permission, Principal, Tenant
from fleet.access.repository import TenantRepository
from fleet.alarms.service import merge_citizen_report
from fleet.audit.service import record
from fleet.db import Database
from fleet.errors import FieldError, NotFound, PermissionDenied, ValidationFailed
from fleet.reports.models import (JURISDICTION_ID, MAX_SPAN_DAYS, SERVICE_REQUEST_ID, SERVICES, SERVICES_BY_CODE,
                                  Filed, Links, NewReport, ReportForm, RequestQuery, Service, ServiceRequest,
                                  new_service_request_id)
from fleet.reports.repository import ReportRepository
from fleet.workorders.service import for_citizen_report

log = structlog.get_logger(__name__)


def reporter_actor(secret: str) -> str:
    """How the audit log names a reporting app: by its key's public prefix (`fleet_<prefix>_…`)."""
    parts = secret.split("_")
    return f"reporter:{parts[1] if len(parts) > 2 else '?'}"


def service(code: str | None) -> Service:
    if not code:
        raise ValidationFailed("service_code was not provided", [FieldError("service_code", "required")])
    found = SERVICES_BY_CODE.get(code)
    if found is None:
        raise NotFound(f"service_code {code!r} was not found")
    return found


def check_report(form: ReportForm) -> NewReport:
    """The form against its service: a location, every required attribute, only offered values.
    Attributes the service does not ask for are dropped, not refused (clients send their own)."""
    found = service(form.service_code)
    errors = []
    if (form.lat is None) != (form.long is None):
        errors.append(FieldError("lat" if form.lat is None else "long", "lat and long come together"))
    elif form.lat is None and not form.address_string and not form.address_id:
        errors.append(FieldError("lat", "a location is required: lat and long, address_string or address_id"))
    attributes: dict[str, Any] = {}
    for attribute in found.attributes:
        values = [v for v in form.attributes.get(attribute.code, []) if v != ""]
        if not values:
            if attribute.required:
                errors.append(FieldError(f"attribute[{attribute.code}]", "required"))
            continue
        if len(values) > 1 and attribute.datatype != "multivaluelist":
            errors.append(FieldError(f"attribute[{attribute.code}]", "takes one value"))
        bad = [v for v in values if not attribute.accepts(v)]
        if bad:
            errors.append(FieldError(f"attribute[{attribute.code}]", f"not an accepted value: {bad[0][:100]!r}"))
        attributes[attribute.code] = values if attribute.datatype == "multivaluelist" else values[0]
    if errors:
        raise ValidationFailed(errors[0].message if len(errors) == 1 else "invalid report", errors)
    return NewReport(found, form, attributes)


def search_span(query: RequestQuery, now: datetime) -> tuple[datetime, datetime]:
    """GeoReport v2: the 90 days up to now unless given; never more than 90 days."""
    span = timedelta(days=MAX_SPAN_DAYS)
    end = query.end or (query.start + span if query.start else now)
    start = query.start or end - span
    if start > end:
        raise ValidationFailed("start_date is after end_date", [FieldError("start_date", "after end_date")])
    if end - start > span:
        raise ValidationFailed(f"start_date and end_date may span at most {MAX_SPAN_DAYS} days",
                               [FieldError("end_date", f"more than {MAX_SPAN_DAYS} days after start_date")])
    return start, end


class ReportService:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def services() -> tuple[Service, ...]:
        return SERVICES

    @staticmethod
    def service(code: str | None) -> Service:
        return service(code)

    async def jurisdiction(self, slug: str | None) -> Tenant:
        if not slug:
            raise ValidationFailed("jurisdiction_id was not provided", [FieldError("jurisdiction_id", "required")])
        tenant = None
        if JURISDICTION_ID.fullmatch(slug):
            async with self.db.system_tx() as conn:
                tenant = await TenantRepository(conn).by_slug(slug)
        if tenant is None:
            raise NotFound(f"jurisdiction_id {slug[:100]!r} was not found")
        return tenant

    async def file(self, principal: Principal, tenant: Tenant, form: ReportForm, *, actor: str) -> Filed:
        """One transaction: the request, and, when a device of the right kind stands within the
        city's radius, that device's open alarm and work order (made or joined)."""
        if tenant.id != principal.tenant_id:
            raise PermissionDenied(f"this api_key does not belong to jurisdiction {tenant.slug!r}")
        if not principal.can(Permission.FILE_REPORTS):
            raise PermissionDenied("this api_key may not file reports")
        report = check_report(form)
        found, form = report.service, report.form
        service_request_id = new_service_request_id()
        now = datetime.now(UTC)
        async with self.db.tenant_tx(tenant.id) as conn:
            repo = ReportRepository(conn)
            linked = Links()
            if form.lat is not None and form.long is not None:
                settings = await repo.settings(tenant.id)
                device_id = await repo.nearest_device(tenant.id, found.device_kind.value, form.lat, form.long,
                                                      settings.match_radius_m)
                if device_id is not None:
                    linked = await self._join(conn, repo, tenant.id, device_id, report, service_request_id, now)
            await repo.insert(tenant.id, report, service_request_id, principal.api_key_id, linked, now)
            # The audit entry keeps what anyone may read; contact details stay in their row.
            await record(conn, principal, "service_request.create", "service_request", service_request_id, None, {
                "service_request_id": service_request_id, "service_code": found.code,
                "description": form.description, "attributes": report.attributes, "lat": form.lat,
                "long": form.long, "address": form.address_string, "address_id": form.address_id,
                "media_url": form.media_url, "device_id": linked.device_id, "alarm_id": linked.alarm_id,
                "work_order_id": linked.work_order_id}, actor=actor)
        log.debug("citizen report filed", tenant=tenant.slug, service_code=found.code,
                  service_request_id=service_request_id, device_id=linked.device_id)
        return Filed(service_request_id, found.service_notice, linked.device_id, linked.work_order_id)

    @staticmethod
    async def _join(conn: asyncpg.Connection, repo: ReportRepository, tenant_id: UUID, device_id: UUID,
                    report: NewReport,
                    service_request_id: str, at: datetime) -> Links:
        """The device's open alarm and work order, made or joined: a report never makes a duplicate."""
        await repo.hold_device(tenant_id, device_id)
        found = report.service
        alarm_id = await merge_citizen_report(conn, tenant_id, device_id,
                                              found.alarm_detail(service_request_id), at)
        notes = f"Citizen report {service_request_id} ({found.name}): {report.form.description}".strip()
        work_order_id = await for_citizen_report(conn, tenant_id, device_id, alarm_id,
                                                 found.work_order_type, notes[:2000])
        return Links(device_id, alarm_id, work_order_id)

    async def requests(self, tenant: Tenant, query: RequestQuery, reader: Principal | None) -> list[ServiceRequest]:
        # service_request_id overrides every other argument (GeoReport v2), the dates too.
        start, end = search_span(query, datetime.now(UTC)) if not query.service_request_ids else (None, None)
        # Ids and codes that cannot exist find nothing; only the others reach the database.
        ids = [i for i in query.service_request_ids if SERVICE_REQUEST_ID.fullmatch(i)]
        codes = tuple(c for c in query.service_codes if c in SERVICES_BY_CODE)
        async with self.db.tenant_tx(tenant.id, readonly=True) as conn:
            repo = ReportRepository(conn)
            await self._may_read(repo, tenant, reader)
            if query.service_request_ids:
                return await repo.by_ids(tenant.id, ids[:query.limit]) if ids else []
            if query.service_codes and not codes:
                return []
            return await repo.search(tenant.id, replace(query, service_codes=codes), start, end)

    async def request(self, tenant: Tenant, service_request_id: str, reader: Principal | None) -> ServiceRequest:
        async with self.db.tenant_tx(tenant.id, readonly=True) as conn:
            repo = ReportRepository(conn)
            await self._may_read(repo, tenant, reader)
            found = await repo.by_ids(tenant.id, [service_request_id]) \
                if SERVICE_REQUEST_ID.fullmatch(service_request_id) else []
        if not found:
            raise NotFound(f"service_request_id {service_request_id[:100]!r} was not found")
        return found[0]

    @staticmethod
    async def _may_read(repo: ReportRepository, tenant: Tenant, reader: Principal | None) -> None:
        if (await repo.settings(tenant.id)).public_requests:
            return
        if reader is None or reader.tenant_id != tenant.id:
            raise PermissionDenied(f"jurisdiction {tenant.slug!r} shows its requests only with its api_key")
