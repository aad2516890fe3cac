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


# Every change of which address speaks for a device is announced here, in the transaction that
# makes it, so every listener process (on every node) drops what it cached about that device.
SESSIONS_CHANNEL = "fleet_sessions"


@dataclass(frozen=True, slots=True)
class SessionChange:
    """A device's registration changed: `registration_id` at `address`:`port` speaks for it now,
    or (all three None) nothing does any more (de-registered, expired, decommissioned)."""

    device_id: UUID
    registration_id: str | None = None
    address: str | None = None
    port: int | None = None

    @property
    def ended(self) -> bool:
        return self.registration_id is None

    @classmethod
    def from_payload(cls, payload: str) -> SessionChange:
        """Parse what the repository's `pg_notify` sends: `device_id [registration_id port address]`.

        Raises ValueError for anything else.
        """
        parts = payload.split(" ")
        if len(parts) == 1:
            return cls(UUID(parts[0]))
        device_id, registration_id, port, address = parts
        return cls(UUID(device_id), registration_id, address, int(port))
