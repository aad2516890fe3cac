"""Device keys encrypted at rest under FLEET_CREDENTIALS_KEY, and the server's DTLS key derived from it."""

from __future__ import annotations

import os
from typing import NamedTuple
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fleet.errors import SettingsError
from fleet.settings import SecuritySettings, Settings

NONCE_BYTES = 12
SERVER_KEY_INFO = b"fleet coaps server key"
# P-256's group order: a scalar is reduced into [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _master_key(settings: SecuritySettings | Settings) -> bytes:
    # The whole Settings is taken too: callers at the composition root hold that.
    settings = getattr(settings, "security", settings)
    if settings.credentials_key is None:
        raise SettingsError("FLEET_CREDENTIALS_KEY",
                            "set (64 hex characters, e.g. from `openssl rand -hex 32`) for Fleet to store "
                            "or read device keys and to present its DTLS key")
    return settings.credentials_key


class KeyOwner(NamedTuple):
    """Whose device key a ciphertext is. All of it is the associated data: a row moved to another
    device, purpose or city (or a ciphertext copied onto another row) does not decrypt."""

    tenant_id: UUID
    device_id: UUID
    purpose: str
    credential_id: UUID

    @classmethod
    def of(cls, row) -> KeyOwner:
        """Of a device_credentials row (id, tenant_id, device_id, purpose)."""
        return cls(row["tenant_id"], row["device_id"], row["purpose"], row["id"])

    def associated_data(self) -> bytes:
        # Fixed-size ids first, the one variable-length field last: no two owners encode alike.
        return (_AAD_LABEL + self.tenant_id.bytes + self.device_id.bytes + self.credential_id.bytes
                + self.purpose.encode())


# Names what the associated data binds (and its layout), should it ever change again.
_AAD_LABEL = b"fleet device key v2\x00"


class CredentialCipher:
    """AES-256-GCM with a random 12-byte nonce per key; its owner (city, device, purpose,
    credential id) is the associated data."""

    def __init__(self, settings: SecuritySettings | Settings) -> None:
        self._aead = AESGCM(_master_key(settings))

    def seal(self, owner: KeyOwner, key: bytes) -> tuple[bytes, bytes]:
        """(ciphertext, nonce)."""
        nonce = os.urandom(NONCE_BYTES)
        return self._aead.encrypt(nonce, key, owner.associated_data()), nonce

    def open(self, owner: KeyOwner, ciphertext: bytes, nonce: bytes) -> bytes | None:
        """The key, or None when it does not decrypt (another FLEET_CREDENTIALS_KEY, a row moved
        to another owner, a key sealed before the owner was bound: credential id only)."""
        try:
            return self._aead.decrypt(nonce, ciphertext, owner.associated_data())
        except InvalidTag:
            return None


def server_key(settings: SecuritySettings | Settings) -> ec.EllipticCurvePrivateKey:
    """The P-256 key every node presents to RPK devices: derived from FLEET_CREDENTIALS_KEY
    (HKDF-SHA256), so all nodes agree without storing it. 48 bytes reduced modulo the order
    keep the bias negligible (FIPS 186-4 B.4.1)."""
    material = HKDF(algorithm=hashes.SHA256(), length=48, salt=None,
                    info=SERVER_KEY_INFO).derive(_master_key(settings))
    scalar = int.from_bytes(material, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def server_public_key_der(settings: SecuritySettings | Settings) -> bytes:
    """The server's public key as SubjectPublicKeyInfo DER (Security object resource 4)."""
    return server_key(settings).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_xy(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """x||y, 32 bytes each: the raw key tinydtls hands over in the handshake."""
    point = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return point[1:]
