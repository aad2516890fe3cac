"""Tenants, API keys, roles and the principal a request acts as."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec


class Role(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    CREW = "crew"
    VIEWER = "viewer"
    # Citizens' reporting apps (Open311): may file and read reports, nothing else.
    REPORTER = "reporter"


class Permission(enum.StrEnum):
    READ = "read"
    MANAGE_DEVICES = "manage_devices"
    MANAGE_GROUPS = "manage_groups"
    SEND_COMMANDS = "send_commands"
    MANAGE_SCHEDULES = "manage_schedules"
    MANAGE_KEYS = "manage_keys"
    READ_AUDIT = "read_audit"
    MANAGE_WORK_ORDERS = "manage_work_orders"
    MANAGE_ALARMS = "manage_alarms"
    # The control room's planning of the work: crews and their bases, the rules that open and
    # assign work orders. Crews work orders; they do not plan them.
    PLAN_WORK = "plan_work"
    FILE_REPORTS = "file_reports"
    # Firmware: release keys and images are the admins' (they decide what may run on the city's
    # devices); operators run campaigns; a required approval is a second admin's.
    MANAGE_FIRMWARE = "manage_firmware"
    RUN_CAMPAIGNS = "run_campaigns"
    APPROVE_CAMPAIGNS = "approve_campaigns"
    # The city's own settings (PATCH /api/v1/tenant): admins.
    MANAGE_TENANT = "manage_tenant"


_OPERATOR = {Permission.READ, Permission.MANAGE_DEVICES, Permission.MANAGE_GROUPS,
             Permission.SEND_COMMANDS, Permission.MANAGE_SCHEDULES, Permission.MANAGE_WORK_ORDERS,
             Permission.MANAGE_ALARMS, Permission.PLAN_WORK, Permission.RUN_CAMPAIGNS}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.CREW: frozenset({Permission.READ, Permission.MANAGE_WORK_ORDERS, Permission.MANAGE_ALARMS}),
    Role.VIEWER: frozenset({Permission.READ}),
    Role.REPORTER: frozenset({Permission.FILE_REPORTS}),
}


@dataclass(frozen=True, slots=True)
class Tenant:
    id: UUID
    slug: str
    name: str
    timezone: str
    created_at: datetime
    # A campaign needs a second admin's approval before it starts.
    firmware_approval_required: bool = False
    # Devices may register over plain CoAP (NoSec); new cities refuse it (docs/security.md).
    allow_nosec_devices: bool = False
    # The DTLS modes the city's devices may use: psk, rpk.
    security_modes: tuple[str, ...] = ("psk", "rpk")


class TenantUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """PATCH /api/v1/tenant: the city's settings; an absent (or null) field stays as it is.
    Each field is a column of `tenants` of the same name."""

    firmware_approval_required: bool | None = None
    # false: devices must use DTLS (a plain-CoAP Register gets 4.03).
    allow_nosec_devices: bool | None = None
    security_modes: list[Literal["psk", "rpk"]] | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: UUID
    tenant_id: UUID
    name: str
    role: Role
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    # Crew-role keys belong to a crew (the tablet of that team); None for every other role.
    crew_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly created key: the only moment its secret exists outside the caller's hands."""

    key: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request (or CLI call) acts as; every service call carries one."""

    tenant_id: UUID
    tenant_slug: str
    tenant_timezone: str
    role: Role
    api_key_id: UUID | None
    request_id: str | None = None
    # The crew a crew-role key belongs to: `assigned_to=me`, "my day" and sync follow it.
    crew_id: UUID | None = None
    # Set when the request came with a browser session's cookie rather than the key itself:
    # its writes must then prove they come from Fleet's own pages (CSRF).
    session_id: UUID | None = None

    @property
    def actor(self) -> str:
        return f"key:{self.api_key_id}" if self.api_key_id else "system"

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A browser session just opened: the cookie's secret (shown once) and who it acts as."""

    secret: str
    principal: Principal
    expires_at: datetime
