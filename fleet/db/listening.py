"""Following a NOTIFY channel on a connection of its own, through lost connections.

Caches that other nodes invalidate (keys, device sessions) are only as good as the feed that
tells them; so whoever follows a channel hears when it starts and stops listening, and a
caller must not trust what it cached in between.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

log = structlog.get_logger("fleet.db")

RETRY_S = 1.0
# A connection can die without the socket saying so (a dropped NAT entry, a failover): a
# round trip this often finds out.
CHECK_S = 10.0
# The pool waits for this connection when it closes: look that often whether it is closing.
CLOSING_CHECK_S = 1.0
# What a lost connection looks like; anything else is a bug, left to the supervisor.
LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class ChannelFollower:
    """Calls `on_payload` for every notification on `channel`, and `on_listening(True/False)`
    when it starts and stops listening; runs until cancelled.

    The loss of the connection is logged once (WARNING, `lost_message`) and its return once
    (INFO), however many attempts lie between.
    """

    def __init__(self, pool: asyncpg.Pool, channel: str, on_payload: Callable[[str], None], *,
                 on_listening: Callable[[bool], None], application_name: str, lost_message: str,
                 check_s: float = CHECK_S, retry_s: float = RETRY_S) -> None:
        self.pool = pool
        self.channel = channel
        self.on_payload = on_payload
        self.on_listening = on_listening
        self.application_name = application_name
        self.lost_message = lost_message
        self.check_s = check_s
        self.retry_s = retry_s
        self.backend_pid: int | None = None  # of the listening connection, while there is one
        self._lost = False

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
                error = "connection closed"
            except LOST as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.on_listening(False)
            if not self._lost and not self.pool.is_closing():
                self._lost = True
                log.warning(self.lost_message, channel=self.channel, error=error)
            await asyncio.sleep(self.retry_s)

    async def _follow(self) -> None:
        async with self.pool.acquire() as conn:
            closed = asyncio.Event()

            def on_closed(_conn) -> None:
                closed.set()

            def on_notification(_conn, _pid, _channel, payload: str) -> None:
                self.on_payload(payload)

            conn.add_termination_listener(on_closed)
            # Named, so that it can be told apart among the node's connections.
            await conn.execute(f"set application_name = '{self.application_name}'")
            await conn.add_listener(self.channel, on_notification)
            self.backend_pid = conn.get_server_pid()
            self.on_listening(True)
            if self._lost:
                self._lost = False
                log.info("listening again", channel=self.channel)
            try:
                since_check = 0.0
                while not closed.is_set() and not self.pool.is_closing():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(CLOSING_CHECK_S):
                            await closed.wait()
                    since_check += CLOSING_CHECK_S
                    if since_check >= self.check_s and not closed.is_set():
                        async with asyncio.timeout(self.check_s):
                            await conn.execute("select 1")
                        since_check = 0.0
            finally:
                self.backend_pid = None
                self.on_listening(False)
                conn.remove_termination_listener(on_closed)
                with contextlib.suppress(Exception):
                    await conn.remove_listener(self.channel, on_notification)
                    await conn.execute("reset application_name")
