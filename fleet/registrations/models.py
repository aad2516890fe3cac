"""A device's registration with the server, and the requests that create or refresh it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

DEFAULT_LIFETIME_S = 86_400
MAX_LIFETIME_S = 30 * 86_400
BINDING_MODES = frozenset("UTSNQ")


@dataclass(frozen=True, slots=True)
class Registration:
    id: str
    device_id: UUID
    tenant_id: UUID
    endpoint: str
    address: str
    port: int
    lifetime_s: int
    binding: str
    queue_mode: bool
    lwm2m_version: str
    object_links: str
    sms_number: str | None
    node: str
    registered_at: datetime
    updated_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    endpoint: str
    address: str
    port: int
    lifetime_s: int
    binding: str
    lwm2m_version: str
    object_links: str
    sms_number: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    registration_id: str
    address: str
    port: int
    lifetime_s: int | None = None
    binding: str | None = None
    object_links: str | None = None
    sms_number: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the server learns by reading /3/0 after a registration."""

    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware_version: str | None = None


@dataclass(frozen=True, slots=True)
class ReadFormatHints:
    """What decides the content format a device is first asked to answer reads in."""

    learned: int | None = None  # the format its reads last succeeded in (negotiated)
    object_links: str | None = None  # its registration's links: the root link may announce ct=
