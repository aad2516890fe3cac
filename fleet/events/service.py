"""Publishing events inside the changing transaction, and following a city's log live on every node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from fleet.access.models import Permission, Principal
from fleet.db import Database
from fleet.db.listening import ChannelFollower
from fleet.errors import FieldError, PermissionDenied, ServiceBusy, ValidationFailed
from fleet.events.models import Event, EventFilter, KeepAlive, Opening, Passed, Position
from fleet.events.repository import EventRepository

log = structlog.get_logger(__name__)

EVENTS_CHANNEL = "fleet_events"
# Events per read; a stream asks for the next page only once the previous one is sent, so this
# is all a listener ever holds in memory, however far behind it is.
PAGE = 500
# While an announced event is not readable yet (an older transaction is still open), or while
# no notification can arrive (the listening connection is lost), the log is read this often.
POLL_S = 1.0
KEEPALIVE_S = 15.0
# A burst of commits wakes a stream many times; it reads at most this often, each read taking
# everything committed since the last.
MIN_READ_INTERVAL_S = 0.2
# Reads of the log under way at once on this node: streams wait here rather than take every
# connection of the API's pool from REST requests.
CONCURRENT_READS = 4
READ_FAILED = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ServiceBusy)


async def publish(conn: asyncpg.Connection, tenant_id: UUID, kind: str, subject_type: str,
                  subject_id: object, payload: dict[str, Any]) -> None:
    """Append one event in the caller's transaction: it exists if and only if the change commits,
    and every node hears of it (NOTIFY `fleet_events`) at that commit."""
    await EventRepository(conn).append(tenant_id, kind, subject_type, subject_id, payload)


class _Listener:
    """One live stream on this node: woken by its city's notifications."""

    __slots__ = ("announced_xid", "tenant_id", "wake")

    def __init__(self, tenant_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.wake = asyncio.Event()
        self.announced_xid = 0  # the newest transaction known to have written this city's events

    def announce(self, xid: int | None) -> None:
        if xid is not None and xid > self.announced_xid:
            self.announced_xid = xid
        self.wake.set()


class EventService:
    """Per node, one connection LISTENs on `fleet_events` for every stream of this node.

    A notification only wakes the streams of its city; each stream then reads the log itself
    from its own position (in a tenant transaction, behind the city's wall), so nothing is lost
    while the connection is away, and the same code serves a live listener and one resuming
    after hours. Notifications carry the writing transaction's id: a stream that has not yet
    read that far (an older transaction still holds the order back) polls until it has.
    """

    def __init__(self, db: Database, *, page: int = PAGE, poll_s: float = POLL_S,
                 keepalive_s: float = KEEPALIVE_S, min_read_interval_s: float = MIN_READ_INTERVAL_S,
                 concurrent_reads: int = CONCURRENT_READS) -> None:
        self.db = db
        self.page = page
        self.poll_s = poll_s
        self.keepalive_s = keepalive_s
        self.min_read_interval_s = min_read_interval_s
        self.listening = False
        self._listeners: dict[UUID, set[_Listener]] = {}
        self._reads = asyncio.Semaphore(concurrent_reads)
        self._reading: dict[tuple[UUID, Position], asyncio.Future[list[Event] | None]] = {}
        self._demand = asyncio.Event()  # the first stream opened or the last one closed
        self.follower = ChannelFollower(
            db.pool, EVENTS_CHANNEL, self._announced, on_listening=self._listening,
            application_name="fleet-events",
            lost_message="lost the feed of events; live streams poll the event log until it is back")

    async def run(self) -> None:
        """Follow the channel while this node has streams, until cancelled (the app's lifespan
        runs this): a node nobody listens to holds no connection for it."""
        while True:
            while not self._listeners:
                self._demand.clear()
                await self._demand.wait()
            following = asyncio.create_task(self.follower.run())
            try:
                while self._listeners:
                    self._demand.clear()
                    await self._demand.wait()
            finally:
                following.cancel()
                try:
                    await following
                except asyncio.CancelledError:
                    # The follower's own cancellation ends here; ours (the lifespan ending while
                    # the last stream's follower stops) must not, or this loop waits forever.
                    if asyncio.current_task().cancelling():
                        raise

    @property
    def streams(self) -> int:
        return sum(len(listeners) for listeners in self._listeners.values())

    def _announced(self, payload: str) -> None:
        tenant, _, xid = payload.partition(" ")
        try:
            tenant_id, written_by = UUID(tenant), int(xid) if xid else None
        except ValueError:
            log.warning("unreadable event announcement", payload=payload[:100])
            self._wake_all()
            return
        for listener in self._listeners.get(tenant_id, ()):
            listener.announce(written_by)

    def _listening(self, now: bool) -> None:
        self.listening = now
        # Back: read whatever committed while nobody could tell. Lost: start polling.
        self._wake_all()

    def _wake_all(self) -> None:
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.wake.set()

    async def open(self, principal: Principal, last_event_id: str | None) -> Opening:
        """Where a stream for `principal` starts: after `last_event_id`, or now."""
        if not principal.can(Permission.READ):
            raise PermissionDenied(f"role {principal.role.value} may not read events")
        try:
            asked = Position.parse(last_event_id) if last_event_id is not None else None
        except ValueError as exc:
            raise ValidationFailed("invalid Last-Event-ID", [FieldError("Last-Event-ID", str(exc))]) from None
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            repo = EventRepository(conn)
            if asked is None:
                return Opening(await repo.horizon())
            pruned, unknown = await repo.resumable(principal.tenant_id, asked)
            if unknown:
                return Opening(await repo.horizon(), reset="unknown")
        # Pruned: what is still kept after the position follows; the listener learns of the gap.
        return Opening(asked, reset="pruned" if pruned else None)

    async def follow(self, principal: Principal, position: Position,
                     wanted: EventFilter = EventFilter()) -> AsyncIterator[Event | Passed | KeepAlive]:
        """The city's events after `position`, as they commit, until the caller stops iterating.

        Yields each wanted event; `Passed` when events were read that none wanted; `KeepAlive`
        after `keepalive_s` without either. No database connection is held between reads.
        """
        tenant_id = principal.tenant_id
        listener = _Listener(tenant_id)
        if not self._listeners:
            self._demand.set()
        self._listeners.setdefault(tenant_id, set()).add(listener)
        loop = asyncio.get_running_loop()
        last_read = last_sent = loop.time()
        try:
            while True:
                listener.wake.clear()
                last_read = loop.time()
                events = await self._read(tenant_id, position)
                failed = events is None
                if events:
                    position = events[-1].position
                    sent = False
                    for event in events:
                        if wanted.wants(event.kind):
                            yield event
                            sent = True
                    if not wanted.wants(events[-1].kind):
                        yield Passed(position)
                        sent = True
                    if sent:
                        last_sent = loop.time()
                    if len(events) == self.page:
                        continue  # more are readable: the consumer's pace sets ours
                while not listener.wake.is_set():
                    behind = failed or listener.announced_xid > position.xid or not self.listening
                    due = last_sent + self.keepalive_s
                    timeout = min(due, last_read + self.poll_s) if behind else due
                    try:
                        async with asyncio.timeout_at(timeout):
                            await listener.wake.wait()
                    except TimeoutError:
                        if loop.time() >= due:
                            yield KeepAlive()
                            last_sent = loop.time()
                        if behind:
                            break
                # Coalesce a burst: one read takes everything committed since the last.
                await asyncio.sleep(max(last_read + self.min_read_interval_s - loop.time(), 0))
        finally:
            listeners = self._listeners.get(tenant_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[tenant_id]
                    if not self._listeners:
                        self._demand.set()

    async def _read(self, tenant_id: UUID, position: Position) -> list[Event] | None:
        """One page of the log; None (and a retry on the next poll) while the database is away.

        A commit wakes every stream of its city on this node at once, most of them at the same
        position: those share one read instead of one query each. (One that joins a read begun
        just before the commit that woke it misses that commit this time; the announcement
        leaves it `behind`, so it polls again within poll_s.)"""
        key = (tenant_id, position)
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.ensure_future(self._read_log(tenant_id, position))
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        # Shielded: a stream that goes away does not cancel the read the others wait for.
        return await asyncio.shield(reading)

    async def _read_log(self, tenant_id: UUID, position: Position) -> list[Event] | None:
        try:
            async with self._reads, self.db.tenant_tx(tenant_id, readonly=True) as conn:
                return await EventRepository(conn).after(tenant_id, position, self.page)
        except READ_FAILED as exc:
            log.info("reading the event log failed; retrying", error=f"{type(exc).__name__}: {exc}")
            return None
