"""What every list takes and hands out: repeated filters, and page cursors (opaque to clients,
a list's own key inside)."""

from __future__ import annotations

import base64
from collections.abc import Collection, Sequence
from typing import Any, TypeVar

import msgspec

from fleet.errors import FieldError, ValidationFailed

T = TypeVar("T")
# Longer is no cursor this API issued; refused before any decoding.
MAX_CURSOR = 200


def encode(kind: bytes, key: Sequence[Any]) -> str:
    """`kind` (b"a:", b"g:", ...) keeps one list's cursor from being taken by another."""
    return base64.urlsafe_b64encode(kind + msgspec.json.encode(list(key))).decode().rstrip("=")


def decode(kind: bytes, cursor: str, key_type: type[T], *, max_length: int = MAX_CURSOR) -> T:
    """The key `encode` put in, as `key_type`; ValidationFailed (field `cursor`) for anything else."""
    try:
        if len(cursor) > max_length:
            raise ValueError
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if not text.startswith(kind):
            raise ValueError
        return msgspec.json.decode(text[len(kind):], type=key_type)
    except (ValueError, msgspec.ValidationError, msgspec.DecodeError):
        raise ValidationFailed("invalid cursor", [FieldError("cursor", "is not a cursor this API issued")]) from None


def choices(field: str, values: Sequence[str], allowed: Collection[str]) -> list[str] | None:
    """`field=a&field=b` and `field=a,b` alike, each one of `allowed`; None for no filter."""
    chosen = [s.strip() for value in values for s in value.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in allowed]
    if unknown:
        raise ValidationFailed(f"invalid {field}", [FieldError(field, f"unknown {field} {unknown[0]!r}")])
    return chosen or None
