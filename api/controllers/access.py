"""/api/v1/tenant, /api/v1/apikeys and /api/v1/audit: the city's own account, keys and audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from litestar import Controller, delete, get, patch, post
from litestar.params import Parameter

from api.schemas import (ApiKey, ApiKeyCreate, ApiKeyCreated, AuditEntry, AuditPage, Tenant,
                         api_key_out)
from api.problems import problems
from fleet.access.models import Principal, Role, TenantUpdate
from fleet.access.service import ApiKeyService, TenantService
from fleet.audit.models import AuditQuery
from fleet.audit.service import AuditService
from fleet.errors import FieldError, ValidationFailed


class TenantController(Controller):
    path = "/api/v1/tenant"
    tags = ["access"]

    @get("/", summary="The caller's city")
    async def current(self, principal: Principal, tenant_service: TenantService) -> Tenant:
        return tenant_out(await tenant_service.current(principal))

    @patch("/", summary="Change the city's settings (admins); absent fields stay as they are",
           responses=problems(403, 422))
    async def change(self, data: TenantUpdate, principal: Principal, tenant_service: TenantService) -> Tenant:
        return tenant_out(await tenant_service.update(principal, data))


def tenant_out(t) -> Tenant:
    return Tenant(t.id, t.slug, t.name, t.timezone, t.created_at, t.firmware_approval_required,
                  t.allow_nosec_devices, list(t.security_modes))


class ApiKeyController(Controller):
    path = "/api/v1/apikeys"
    tags = ["access"]

    @post("/", summary="Issue a key (admins); the secret is shown only in this response",
          responses=problems(403, 422))
    async def issue(self, data: ApiKeyCreate, principal: Principal,
                    apikey_service: ApiKeyService) -> ApiKeyCreated:
        issued = await apikey_service.issue(principal, Role(data.role), data.name, data.crew_id)
        return ApiKeyCreated(issued.secret, api_key_out(issued.key))

    @get("/", summary="The city's keys, without secrets", responses=problems(403))
    async def list_keys(self, principal: Principal, apikey_service: ApiKeyService) -> list[ApiKey]:
        return [api_key_out(k) for k in await apikey_service.list(principal)]

    @delete("/{key_id:uuid}", summary="Revoke a key", status_code=200, responses=problems(403))
    async def revoke(self, key_id: UUID, principal: Principal, apikey_service: ApiKeyService) -> ApiKey:
        return api_key_out(await apikey_service.revoke(principal, key_id))


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["access"]

    @get("/", summary="Audit entries, newest first (admins)", responses=problems(403, 422))
    async def search(
        self, principal: Principal, audit_service: AuditService,
        entity_type: str | None = None, entity_id: str | None = None, action: str | None = None,
        api_key_id: UUID | None = None, since: datetime | None = None, until: datetime | None = None,
        cursor: str | None = None, limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> AuditPage:
        before_id = None
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
                raise ValidationFailed("invalid cursor", [FieldError("cursor", "is not a cursor this API issued")])
            before_id = int(cursor)
        entries = await audit_service.search(principal, AuditQuery(
            entity_type, entity_id, action, api_key_id, since, until, before_id, limit + 1))
        more = len(entries) > limit
        entries = entries[:limit]
        return AuditPage([AuditEntry(**{f: getattr(e, f) for f in AuditEntry.__struct_fields__})
                          for e in entries], str(entries[-1].id) if more else None)
