"""Telling "PostgreSQL is away" apart from every other database error."""

from __future__ import annotations

import contextlib

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


def broken_connection(exc: BaseException) -> bool:
    """The connection itself cannot go on (cut off mid-operation, or already taken back by
    the pool because it closed): drop it and take another; the database may be fine."""
    return isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError)


def lost(conn: asyncpg.Connection) -> bool:
    """A held connection closed. asyncpg hands a pooled connection that closes back to its
    pool by itself, after which even asking is an error."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


async def discard(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """Close a held connection that failed and give its place back to the pool."""
    with contextlib.suppress(asyncpg.InterfaceError):  # already taken back (see `lost`)
        conn.terminate()
    await pool.release(conn)
