"""Connecting to the database by its admin DSN, with one error that says where and why it failed."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg

# What a connection attempt raises when the server is away, refuses the login or lacks the
# database, as against an error in what Fleet then does on the connection.
CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresConnectionError,
                  asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError,
                  asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)


def dsn_target(dsn: str) -> str:
    """`user@host:port/database` of a DSN: enough to find it, never its password."""
    parts = urlsplit(dsn)
    user = parts.username or ""
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{user}@{host}{port}{parts.path or '/'}" if user else f"{host}{port}{parts.path or '/'}"


class DatabaseUnreachable(ConnectionError):
    """The database of FLEET_DATABASE_URL (or the embedded one) refused or never answered."""

    def __init__(self, dsn: str, cause: BaseException) -> None:
        self.target = dsn_target(dsn)
        self.reason = str(cause) or type(cause).__name__
        super().__init__(f"cannot connect to the database {self.target}: {self.reason}")


async def connect(dsn: str, *, timeout: float = 60.0, application_name: str = "fleet") -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=timeout, server_settings={"application_name": application_name})
    except CONNECT_ERRORS as exc:
        raise DatabaseUnreachable(dsn, exc) from exc
