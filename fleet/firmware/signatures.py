"""Ed25519 release keys: reading a city's PEM public key and checking an image's signature."""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


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
