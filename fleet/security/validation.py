"""Checking a PSK (identity, key) or a raw public key before it is stored, one FieldError per fault."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.errors import FieldError, ValidationFailed
from fleet.security.crypto import public_key_xy
from fleet.security.models import MAX_IDENTITY_BYTES, MAX_KEY_BYTES, MIN_KEY_BYTES, MODES, ImportedCredential

# A PEM public key of P-256 is ~180 characters; anything far longer is not one.
MAX_PEM_CHARS = 4096
_HEX = re.compile(r"[0-9a-fA-F]*")


def psk_identity_errors(identity: str, field: str = "identity", row: int | None = None) -> list[FieldError]:
    size = len(identity.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_IDENTITY_BYTES:
        return [FieldError(field, f"must be 1-{MAX_IDENTITY_BYTES} bytes of UTF-8, got {size}", row)]
    if any(ord(c) < 32 or ord(c) == 127 for c in identity):
        # PostgreSQL text cannot hold NUL, and a device's configuration tool rarely types the others.
        return [FieldError(field, "must not contain control characters", row)]
    if any(0xD800 <= ord(c) <= 0xDFFF for c in identity):
        return [FieldError(field, "must be valid UTF-8", row)]
    return []


def parse_key_hex(key_hex: str, field: str = "key_hex", row: int | None = None) -> tuple[bytes | None, list[FieldError]]:
    text = key_hex.strip()
    if not _HEX.fullmatch(text) or len(text) % 2:
        return None, [FieldError(field, "must be hexadecimal digits, two per byte", row)]
    if not MIN_KEY_BYTES <= len(text) // 2 <= MAX_KEY_BYTES:
        return None, [FieldError(field, f"must be {MAX_KEY_BYTES} bytes ({2 * MAX_KEY_BYTES} hex digits: what "
                                        f"the DTLS listener takes), got {len(text) // 2}", row)]
    return bytes.fromhex(text), []


def parse_public_key(pem: str, field: str = "public_key",
                     row: int | None = None) -> tuple[tuple[bytes, bytes] | None, list[FieldError]]:
    """(SubjectPublicKeyInfo DER, x||y) of a P-256 public key in PEM."""
    expected = "must be a P-256 public key in PEM (-----BEGIN PUBLIC KEY-----, a SubjectPublicKeyInfo)"
    if len(pem) > MAX_PEM_CHARS or "-----BEGIN PUBLIC KEY-----" not in pem:
        return None, [FieldError(field, expected, row)]
    try:
        key = serialization.load_pem_public_key(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, TypeError, UnsupportedAlgorithm):
        return None, [FieldError(field, expected, row)]
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return None, [FieldError(field, f"{expected}; this is not an elliptic-curve key", row)]
    if not isinstance(key.curve, ec.SECP256R1):
        return None, [FieldError(field, f"{expected}; this key is on {key.curve.name}", row)]
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return (der, public_key_xy(key)), []


def pem_of(der: bytes) -> str:
    return serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def fingerprint_of(pem: str) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo DER, in hex: what an installer reads off the device's
    label or computes with `openssl pkey -pubin -outform DER | sha256sum`, shorter than the PEM."""
    der = serialization.load_pem_public_key(pem.strip().encode("ascii")).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def raise_if(errors: list[FieldError], detail: str = "invalid device credential") -> None:
    if errors:
        raise ValidationFailed(detail, errors)


# The registry's CSV (and GeoJSON) columns for credentials; an export fills the first two and
# `public_key`, and never a key.
SECURITY_COLUMNS = ("security_mode", "psk_identity", "psk_key_hex", "public_key",
                    "bootstrap_psk_identity", "bootstrap_psk_key_hex")
SECRET_COLUMNS = ("psk_key_hex", "bootstrap_psk_key_hex")


def _text(raw: Mapping[str, Any], column: str) -> str:
    value = raw.get(column)
    return value.strip() if isinstance(value, str) else "" if value is None else str(value)


def credentials_from_row(raw: Mapping[str, Any], row: int | None) -> tuple[list[ImportedCredential], list[FieldError]]:
    """An import row's credentials (none, operational, bootstrap), every fault at once. A key is
    required (an import's answer cannot show one Fleet made up)."""
    mode = _text(raw, "security_mode").lower()
    identity, key_hex, pem = _text(raw, "psk_identity"), _text(raw, "psk_key_hex"), _text(raw, "public_key")
    if not mode:
        mode = "psk" if identity or key_hex else "rpk" if pem else "nosec"
    credentials: list[ImportedCredential] = []
    errors: list[FieldError] = []
    if mode not in ("nosec", *MODES):
        errors.append(FieldError("security_mode", "must be nosec, psk or rpk (empty: what the other columns say)", row))
    elif mode == "nosec":
        errors += [FieldError(c, "must be empty for a nosec device", row)
                   for c, v in (("psk_identity", identity), ("psk_key_hex", key_hex), ("public_key", pem)) if v]
    elif mode == "psk":
        errors += [FieldError("public_key", "must be empty for a psk device", row)] if pem else []
        credential, psk_errors = _psk(identity, key_hex, "operational", "psk_identity", "psk_key_hex", row)
        errors += psk_errors
        credentials += [credential] if credential else []
    else:
        errors += [FieldError(c, "must be empty for an rpk device", row)
                   for c, v in (("psk_identity", identity), ("psk_key_hex", key_hex)) if v]
        parsed, key_errors = (None, [FieldError("public_key", "is required for an rpk device", row)]) if not pem \
            else parse_public_key(pem, row=row)
        errors += key_errors
        if parsed:
            credentials.append(ImportedCredential("operational", "rpk", public_key_der=parsed[0],
                                                  public_key_xy=parsed[1]))
    bootstrap_identity, bootstrap_key = _text(raw, "bootstrap_psk_identity"), _text(raw, "bootstrap_psk_key_hex")
    if bootstrap_identity or bootstrap_key:
        credential, psk_errors = _psk(bootstrap_identity, bootstrap_key, "bootstrap", "bootstrap_psk_identity",
                                      "bootstrap_psk_key_hex", row)
        errors += psk_errors
        credentials += [credential] if credential else []
    return credentials, errors


def _psk(identity: str, key_hex: str, purpose: str, identity_column: str, key_column: str,
         row: int | None) -> tuple[ImportedCredential | None, list[FieldError]]:
    errors = [FieldError(identity_column, "is required for a psk credential", row)] if not identity \
        else psk_identity_errors(identity, identity_column, row)
    key, key_errors = (None, [FieldError(key_column, "is required for a psk credential", row)]) if not key_hex \
        else parse_key_hex(key_hex, key_column, row)
    errors += key_errors
    if errors:
        return None, errors
    return ImportedCredential(purpose, "psk", identity=identity, key=key), []


def duplicate_credentials(rows: Sequence[tuple[int, list[ImportedCredential]]]) -> list[FieldError]:
    """The same identity or public key twice in one import."""
    errors: list[FieldError] = []
    first_seen: dict[tuple[str, object], int] = {}
    for number, credentials in rows:
        for credential in credentials:
            column = ("bootstrap_psk_identity" if credential.purpose == "bootstrap" else "psk_identity") \
                if credential.mode == "psk" else "public_key"
            name = ("identity", credential.identity) if credential.mode == "psk" else ("key", credential.public_key_xy)
            if name in first_seen:
                errors.append(FieldError(column, f"duplicates row {first_seen[name]}", number))
            else:
                first_seen[name] = number
    return errors
