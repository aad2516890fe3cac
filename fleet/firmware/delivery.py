"""One-time Package URIs for pulled firmware: the token a device downloads with, and its URI."""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> tuple[str, bytes]:
    """A fresh token (URL-safe text for the URI) and its SHA-256, which is all the row keeps."""
    token = secrets.token_urlsafe(24)
    return token, hashlib.sha256(token.encode()).digest()


def package_uri(base_uri: str, token: str) -> str:
    return f"{base_uri.rstrip('/')}/fw/{token}"
