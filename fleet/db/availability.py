"""Telling "PostgreSQL is away" apart from every other database error."""

from __future__ import annotations

import asyncpg

from fleet.errors import Unavailable

# The SQLSTATE classes of a server that is gone, going or not there yet: 08 (connection
# exceptions) and 57P01-57P03 (shutdown, crash, starting up).
_AWAY = (asyncpg.PostgresConnectionError, asyncpg.exceptions.AdminShutdownError,
         asyncpg.exceptions.CrashShutdownError, asyncpg.exceptions.CannotConnectNowError)


def database_away(exc: BaseException) -> bool:
    """True when `exc` says the server cannot be reached now (retrying later may work)."""
    if isinstance(exc, (Unavailable, ConnectionError, FileNotFoundError, *_AWAY)):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return True  # a refused or reset socket, an unreachable host
    # asyncpg's "connection is closed" / "connection was closed in the middle of operation".
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


def unavailable(exc: BaseException | None = None) -> Unavailable:
    reason = f" ({type(exc).__name__})" if exc is not None else ""
    return Unavailable(f"the database is unavailable{reason}; retry later")
