"""Who a DTLS peer is: the types the coaps engines and the credential directory share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


class DtlsError(Exception):
    """A DTLS handshake failed or a session ended."""


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    mode: str            # "psk" | "rpk"
    identity: bytes      # PSK identity, or the peer's raw public key x||y (64 bytes, P-256)
    credential: object   # what DeviceKeys returned for it (opaque here)


class DeviceKeys(Protocol):
    """Looked up synchronously inside tinydtls' callbacks (never awaits)."""

    def psk(self, identity: bytes) -> tuple[bytes, object] | None: ...   # (key, credential)

    def rpk(self, public_key_xy: bytes) -> object | None: ...            # credential

    def looking_up(self, mode: str, identity: bytes) -> bool:
        """Whether a fetch of this PSK identity / raw public key (after a miss) is under way:
        the handshake waits for it rather than refusing a credential set a moment ago."""
        return False


@dataclass(frozen=True, slots=True)
class PskCredentials:
    identity: bytes
    key: bytes = field(repr=False)  # never in a log line or a traceback


@dataclass(frozen=True, slots=True)
class RpkCredentials:
    private_key: ec.EllipticCurvePrivateKey
    server_public_key: object  # ec.EllipticCurvePublicKey, SubjectPublicKeyInfo DER, or raw x||y


def public_key_xy(key) -> bytes:
    """The raw x||y (64 bytes) of a P-256 key: what tinydtls shows of a peer's public key.
    Takes a private or public key object, SubjectPublicKeyInfo DER, PEM, or x||y itself."""
    if isinstance(key, bytes | bytearray | memoryview):
        key = bytes(key)
        if len(key) == 64:
            return key
        key = (serialization.load_pem_public_key(key) if key.lstrip().startswith(b"-----")
               else serialization.load_der_public_key(key))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("raw public keys must be P-256 (secp256r1)")
    numbers = key.public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
