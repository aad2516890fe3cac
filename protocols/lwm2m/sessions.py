"""The listener's cache of which device each registered address speaks for, kept true to the database."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from uuid import UUID

from fleet.registrations.models import Registration, SessionChange

# (host, port, secure): a DTLS session and a plain datagram from the same address and port are
# different peers, so a spoofed plain datagram never speaks for a device registered over coaps.
Peer = tuple[str, int, bool]

# A notification is never lost while its connection lives, and a lost connection flushes the
# cache; the lifetime is a backstop against what neither covers, long enough that a device
# reporting every 15 minutes is looked up in the database about once an hour.
SESSION_TTL_S = 3600.0
MAX_SESSIONS = 100_000


@dataclass(frozen=True, slots=True)
class Session:
    """What a datagram from a registered address is attributed to."""

    registration_id: str
    device_id: UUID
    tenant_id: UUID
    endpoint: str
    # time.monotonic() after which the database is asked again.
    cached_until: float = 0.0


class SessionCache:
    """Peer -> session, at most one peer per device, bounded in size and age.

    Every process that answers Sends keeps one and applies every `SessionChange` committed by
    any process or node (`RegistrationService.follow_sessions`). While those changes are not
    followed (starting, or the connection lost) it caches nothing, so each Send is checked
    against the database: never an address the database no longer holds.
    """

    def __init__(self, *, max_sessions: int = MAX_SESSIONS, ttl_s: float = SESSION_TTL_S) -> None:
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._by_peer: dict[Peer, Session] = {}
        self._by_device: dict[UUID, Peer] = {}
        self.following = False
        # A registration read from the database while a change of that device (or address)
        # arrived may be what the change replaced: unless it is what the change says, it is used
        # for the request at hand but not cached. So each change is numbered, and while reads
        # are under way each changed device and address keeps its last change.
        self._generation = 0
        self._stale_before = 0  # no read that started before this change is cached
        self._reads = 0
        self._changed: dict[UUID | Peer, tuple[int, SessionChange]] = {}
        self.on_ended: Callable[[set[UUID]], None] | None = None

    def __len__(self) -> int:
        return len(self._by_peer)

    def get(self, peer: Peer) -> Session | None:
        """The cached session of `peer` if still fresh; the Send hot path, so no more than this."""
        session = self._by_peer.get(peer)
        if session is not None and session.cached_until > time.monotonic():
            return session
        return None

    @contextlib.contextmanager
    def reading(self) -> Iterator[int]:
        """Around reading a registration from the database; gives `since` for `remember`."""
        self._reads += 1
        try:
            yield self._generation
        finally:
            self._reads -= 1
            if not self._reads:
                self._changed.clear()

    def remember(self, registration: Registration, *, since: int | None = None) -> Session:
        """Cache what `registration` says, unless changes are not followed or one of this device
        arrived since `since` (see `reading`); its other addresses stop speaking for it at once."""
        peer = (registration.address, registration.port, registration.secure)
        session = Session(registration.id, registration.device_id, registration.tenant_id,
                          registration.endpoint, time.monotonic() + self.ttl_s)
        self.forget_device(registration.device_id)
        self._drop(peer)
        if not self.following or (since is not None and not self._unchanged_since(since, registration)):
            return session
        while len(self._by_peer) >= self.max_sessions:
            # Oldest cached first; a device still talking is cached again on its next Send.
            self._drop(next(iter(self._by_peer)))
        self._by_peer[peer] = session
        self._by_device[registration.device_id] = peer
        return session

    def _unchanged_since(self, since: int, registration: Registration) -> bool:
        if self._stale_before > since:
            return False
        read = SessionChange(registration.device_id, registration.id, registration.address, registration.port,
                             registration.secure)
        for key in (registration.device_id, read.peer):
            number, change = self._changed.get(key, (since, read))
            if number > since and change != read:
                return False
        return True

    def of_device(self, device_id: UUID) -> Session | None:
        peer = self._by_device.get(device_id)
        return self._by_peer.get(peer) if peer else None

    def forget_device(self, device_id: UUID) -> None:
        peer = self._by_device.pop(device_id, None)
        if peer is not None:
            self._by_peer.pop(peer, None)

    def forget_devices(self, device_ids: Iterable[UUID]) -> None:
        for device_id in device_ids:
            self.forget_device(device_id)

    def apply(self, change: SessionChange | None) -> None:
        """A registration change committed somewhere (None: unknown, so forget everything)."""
        self._generation += 1
        if change is None:
            self.flush()
            return
        if self._reads:
            if len(self._changed) >= self.max_sessions:
                # Reads overlapping for ever under a storm of changes: none of those under way
                # is cached, rather than remembering changes without bound.
                self._changed.clear()
                self._stale_before = self._generation
            self._changed[change.device_id] = (self._generation, change)
            if not change.ended:
                self._changed[change.peer] = (self._generation, change)
        current = self.of_device(change.device_id)
        if current is not None and (change.ended or current.registration_id != change.registration_id
                                    or self._by_device[change.device_id] != change.peer):
            self.forget_device(change.device_id)
        if not change.ended:
            # Another device now at this address (a NAT handed it on): the old one no longer is.
            other = self._by_peer.get(change.peer)
            if other is not None and other.device_id != change.device_id:
                self._drop(change.peer)
        elif self.on_ended is not None:
            self.on_ended({change.device_id})

    def set_following(self, following: bool) -> None:
        """Changes are followed again (True) or may be missed from now on (False); either way
        what was cached may have missed some, so it goes."""
        self.following = following
        self.flush()

    def flush(self) -> None:
        self._generation += 1
        self._stale_before = self._generation
        self._by_peer.clear()
        self._by_device.clear()

    def _drop(self, peer: Peer) -> None:
        session = self._by_peer.pop(peer, None)
        if session is not None and self._by_device.get(session.device_id) == peer:
            del self._by_device[session.device_id]
