"""Device credentials as the handshake, the REST API and the bootstrap server see them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

MODES = ("psk", "rpk")
PURPOSES = ("operational", "bootstrap")
# What the coaps listener's tinydtls (0.8.6 as DTLSSocket 0.2.3 builds it) can take, stricter
# than RFC 7925 §4.2 (identities up to 128 bytes): DTLS_PSK_MAX_CLIENT_IDENTITY_LEN is 32 and
# DTLS_PSK_MAX_KEY_LEN 16, so a longer identity or key would be stored and then never complete a
# handshake (tests/protocols/coap/test_dtls_limits.py). 16 bytes is also RFC 7925's minimum.
MAX_IDENTITY_BYTES = 32
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 16
# A key Fleet makes up when the caller gives none.
GENERATED_KEY_BYTES = 16
# Every node's directory listens here (payload: a credential id, or '*': reload everything).
CREDENTIALS_CHANNEL = "fleet_credentials"

Purpose = Literal["operational", "bootstrap"]


@dataclass(frozen=True, slots=True)
class KnownCredential:
    """Who a DTLS peer proved to be: what the directory hands the coaps listener for an
    identity or a public key, and what a request over coaps carries as its authenticated claim."""

    credential_id: UUID
    device_id: UUID
    tenant_id: UUID
    endpoint: str
    purpose: str  # operational | bootstrap
    mode: str     # psk | rpk
    state: str    # active | pending


class SetPsk(msgspec.Struct, tag_field="mode", tag="psk", forbid_unknown_fields=True, kw_only=True):
    """PUT /api/v1/devices/{id}/security with a pre-shared key; no `key_hex`: Fleet makes one
    up and shows it in this answer only."""

    identity: str
    key_hex: str | None = None
    purpose: Purpose = "operational"


class SetRpk(msgspec.Struct, tag_field="mode", tag="rpk", forbid_unknown_fields=True, kw_only=True):
    """PUT /api/v1/devices/{id}/security with the device's raw public key (a P-256
    SubjectPublicKeyInfo in PEM)."""

    public_key: str
    purpose: Purpose = "operational"


SetCredential = SetPsk | SetRpk


@dataclass(frozen=True, slots=True)
class Credential:
    """A stored credential, never with its key."""

    id: UUID
    tenant_id: UUID
    device_id: UUID
    purpose: str
    mode: str
    identity: str | None
    public_key_pem: str | None
    state: str
    version: int
    created_at: datetime
    retired_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ServerPublicKey:
    """Fleet's own DTLS public key, the one RPK devices check (the same on every node)."""

    pem: str  # SubjectPublicKeyInfo
    der_hex: str  # the same, DER, in hex: what the Security object's resource 4 holds
    sha256: str  # SHA-256 of the DER, in hex: a fingerprint to compare by eye


@dataclass(frozen=True, slots=True)
class CredentialSet:
    """What setting a credential answers: the credential, and the key when Fleet made it up
    (shown this once, never again)."""

    credential: Credential
    generated_key_hex: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedPsk:
    """An operational PSK the bootstrap server writes to a device: stored pending, its
    plaintext returned once."""

    identity: str
    key: bytes = field(repr=False)  # never in a log line or a traceback
    credential: KnownCredential


@dataclass(frozen=True, slots=True)
class IssuedRpk:
    """An operational key pair the bootstrap server writes to a device of a city that takes no
    PSK: the public key stored pending, the private key (PKCS#8 DER) returned once and never
    kept."""

    public_key_der: bytes
    private_key_der: bytes
    credential: KnownCredential


@dataclass(frozen=True, slots=True)
class Activation:
    """A pending credential made active, and the ids of the credentials it retired."""

    credential: KnownCredential
    retired: list[UUID]


@dataclass(frozen=True, slots=True)
class ImportedCredential:
    """A credential column set of a registry import row, already validated."""

    purpose: str
    mode: str
    identity: str | None = None
    key: bytes | None = field(default=None, repr=False)  # never in a log line or a traceback
    public_key_der: bytes | None = None
    public_key_xy: bytes | None = None
