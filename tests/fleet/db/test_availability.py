"""Which errors mean "the database is away" (5.03, retry later) and which are something else."""

from __future__ import annotations

import asyncpg
import pytest

from fleet.db.availability import broken_connection, database_away
from fleet.errors import Unavailable


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(), FileNotFoundError(), ConnectionResetError(),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.InterfaceError("connection is closed"), Unavailable("away"),
])
def test_away(exc):
    assert database_away(exc)


@pytest.mark.parametrize("exc", [
    asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence"),
    asyncpg.UniqueViolationError("duplicate"), TimeoutError(), ValueError("bug"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
])
def test_not_away(exc):
    assert not database_away(exc)


def test_a_connection_in_no_state_to_go_on_is_broken_but_the_database_may_be_fine():
    error = asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
    assert broken_connection(error) and not database_away(error)
