"""A device's registration with the server, and the requests that create or refresh it."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    # Came over coaps:// (DTLS): only datagrams of that DTLS session speak for the device.
    secure: bool = False


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
    secure: bool = False
    # Over coaps: the device the DTLS credential belongs to (and the credential itself, to
    # activate a pending one); the endpoint must be that device's. None over plain coap.
    authenticated: AuthenticatedDevice | None = None


@dataclass(frozen=True, slots=True)
class AuthenticatedDevice:
    """Who a DTLS handshake proved the peer to be: a device's credential, compared by its id.

    The credential object is as the directory held it at the handshake: its state moves on
    (pending -> active at the device's first Register) while the session stays the same."""

    device_id: UUID
    purpose: str  # "operational" registers; "bootstrap" only bootstraps
    credential_id: UUID
    mode: str  # psk | rpk
    # fleet.security's KnownCredential, handed back to activate it; not part of who it is.
    credential: object = field(compare=False)


@dataclass(frozen=True, slots=True)
class DevicePolicy:
    """What a device's city asks of it on the network (fleet.security holds the credentials)."""

    device_id: UUID
    tenant_id: UUID
    endpoint: str
    allow_nosec: bool  # the city takes devices without DTLS
    security_modes: tuple[str, ...]  # the secure modes it takes: psk, rpk
    has_operational: bool  # the device holds a (pending or active) key to register with
    has_bootstrap: bool  # ... and a factory key to bootstrap with

    def refuse_register(self, secure: bool, authenticated: AuthenticatedDevice | None) -> str | None:
        """Why this device may not register so (None: it may).

        Over coaps the DTLS credential must be this device's operational one, in a mode the
        city takes; over plain coap the city must take NoSec devices and the device must hold no
        key (a device with a key uses it: anyone can send a plain datagram with its name)."""
        if secure:
            if authenticated is None or authenticated.device_id != self.device_id:
                return (f"the DTLS credential does not belong to endpoint {self.endpoint!r}: "
                        "a device registers only as itself")
            if authenticated.purpose != "operational":
                return "a bootstrap credential does not register: bootstrap first (POST /bs)"
            if authenticated.mode not in self.security_modes:
                return f"this city does not take {authenticated.mode} credentials"
            return None
        if not self.allow_nosec:
            return "this city requires DTLS: register over coaps:// with the device's credential"
        if self.has_operational:
            return "this device has a DTLS credential: register over coaps:// with it"
        return None

    def refuse_bootstrap(self, secure: bool, authenticated: AuthenticatedDevice | None) -> str | None:
        """Why this peer may not bootstrap the device (None: it may). Over coaps it holds the
        device's bootstrap credential; over plain coap the city takes NoSec devices and the
        device has no bootstrap credential (one that has must use it)."""
        if not self.security_modes:
            return "this city allows no DTLS mode: nothing to bootstrap the device with"
        if secure:
            if authenticated is None or authenticated.device_id != self.device_id:
                return (f"the DTLS credential does not belong to endpoint {self.endpoint!r}: "
                        "a device bootstraps only as itself")
            if authenticated.purpose != "bootstrap":
                return "bootstrap needs the device's bootstrap credential, not its operational one"
            return None
        if not self.allow_nosec:
            return "this city requires DTLS: bootstrap over coaps:// with the device's bootstrap credential"
        if self.has_bootstrap:
            return "this device has a bootstrap credential: bootstrap over coaps:// with it"
        return None


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    registration_id: str
    address: str
    port: int
    secure: bool = False
    authenticated: AuthenticatedDevice | None = None
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


# Why a registration ended other than by its device or its lifetime (`reason` of the
# device.status_changed event): the city stopped admitting how it registered (NoSec, a mode),
# or the device's operational key was set anew or revoked (a registration made with the old one).
SECURITY_POLICY_CHANGED = "security_policy_changed"
CREDENTIAL_CHANGED = "credential_changed"

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
    secure: bool = False

    @property
    def ended(self) -> bool:
        return self.registration_id is None

    @property
    def peer(self) -> tuple[str, int, bool]:
        return self.address, self.port, self.secure

    @classmethod
    def from_payload(cls, payload: str) -> SessionChange:
        """Parse what the repository's `pg_notify` sends:
        `device_id [registration_id port address [s]]` (`s`: over coaps).

        Raises ValueError for anything else.
        """
        parts = payload.split(" ")
        if len(parts) == 1:
            return cls(UUID(parts[0]))
        secure = len(parts) == 5 and parts.pop() == "s"
        device_id, registration_id, port, address = parts
        return cls(UUID(device_id), registration_id, address, int(port), secure)
