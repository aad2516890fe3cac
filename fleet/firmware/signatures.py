"""Ed25519 release keys: reading a city's PEM public key, checking an image's signature, and
making keys and signatures for the command line."""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleet.errors import FieldError, ValidationFailed

SIGNATURE_BYTES = 64


class BadKey(ValueError):
    """The PEM text is not an Ed25519 public key."""


def load_public_key(pem: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise BadKey(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadKey(f"an Ed25519 public key is needed, this is {type(key).__name__.removesuffix('PublicKey') or 'another kind'}")
    return key


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte key: the same key in any PEM spelling is one key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def verifies(pem: str, signature: bytes, content: bytes) -> bool:
    """Whether `signature` is the key's Ed25519 signature of `content`."""
    try:
        load_public_key(pem).verify(signature, content)
    except (InvalidSignature, BadKey, ValueError):
        return False
    return True


def signature_from_base64(text: str) -> bytes:
    """The 64 bytes of an Ed25519 signature given as base64 (what `fleet firmware sign` prints)."""
    try:
        signature = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("invalid signature", [FieldError("signature", "is not base64")]) from None
    if len(signature) != SIGNATURE_BYTES:
        raise ValidationFailed("invalid signature", [FieldError(
            "signature", f"an Ed25519 signature is {SIGNATURE_BYTES} bytes, this is {len(signature)}")])
    return signature


def signing_key(pem: bytes) -> Ed25519PrivateKey:
    """A city's private release key, as `fleet firmware keygen` wrote it."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise BadKey(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadKey("an Ed25519 private key is needed")
    return key


def new_signing_key() -> tuple[bytes, str]:
    """A new release key: its private PEM (PKCS#8, to keep secret) and its public PEM (to register)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return private, public_pem(key.public_key())


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(key: Ed25519PrivateKey, content: bytes) -> str:
    """The base64 signature of `content` an upload's `signature` field takes."""
    return base64.b64encode(key.sign(content)).decode()
