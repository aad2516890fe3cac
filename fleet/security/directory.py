"""Every credential that can authenticate, in memory for the DTLS handshake, kept current by LISTEN."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg
import structlog

from fleet.db import Database
from fleet.db.listening import LOST, ChannelFollower
from fleet.security.crypto import CredentialCipher, KeyOwner
from fleet.security.models import CREDENTIALS_CHANNEL, KnownCredential
from fleet.security.repository import CredentialRepository
from fleet.settings import SecuritySettings

log = structlog.get_logger(__name__)

# Lookups of names the directory does not hold, waiting for the database at once; more are
# refused until some are answered (a scan of random identities must not queue without end).
MAX_PENDING_LOOKUPS = 1000
# A name the database did not know either is not asked about again for this long: the device
# retransmits its ClientHello every second or two.
MISS_TTL_S = 5.0
RETRY_S = 1.0
CHECK_S = 10.0
# Rows of a full load turned into entries between two yields to the event loop.
RELOAD_SLICE = 2000


@dataclass(frozen=True, slots=True)
class _Entry:
    known: KnownCredential
    identity: bytes | None
    key: bytes | None = field(repr=False)  # never in a log line or a traceback
    public_key_xy: bytes | None
    nonce: bytes | None = None  # of the stored key: the same nonce and id, the same key


def _owner(known: KnownCredential) -> KeyOwner:
    return KeyOwner(known.tenant_id, known.device_id, known.purpose, known.credential_id)


def _lookup_name(mode: str, identity: bytes) -> bytes:
    """How a lookup remembers a PSK identity (b"i") or raw public key (b"k") it was asked for."""
    return (b"i" if mode == "psk" else b"k") + identity


class CredentialDirectory:
    """Implements the coaps listener's `DeviceKeys` (protocols.coap.dtls): `psk(identity)` and
    `rpk(public_key_xy)` answer synchronously from memory, inside tinydtls' callbacks.

    `run()` loads every live credential through the system login, then follows
    `fleet_credentials`; on every (re)connection it loads everything again, since changes may
    have been missed meanwhile (until then it keeps answering from what it holds, so devices
    keep working while the database is away). A name it does not hold starts a fetch of that
    name, so the device's retransmitted ClientHello finds it. The credentials that leave
    (retired, deleted) in one change are passed together to each `on_removed` hook, e.g. to
    close their DTLS sessions in one pass.
    """

    def __init__(self, db: Database, settings: SecuritySettings, *,
                 on_removed: Callable[[list[KnownCredential]], None] | None = None,
                 max_pending_lookups: int = MAX_PENDING_LOOKUPS, miss_ttl_s: float = MISS_TTL_S,
                 check_s: float = CHECK_S, retry_s: float = RETRY_S) -> None:
        self.db = db
        self.cipher = CredentialCipher(settings)  # no FLEET_CREDENTIALS_KEY: SettingsError at once
        self.removal_hooks: list[Callable[[list[KnownCredential]], None]] = [on_removed] if on_removed else []
        self.max_pending_lookups = max_pending_lookups
        self.miss_ttl_s = miss_ttl_s
        self.check_s = check_s
        self.retry_s = retry_s
        # Set once everything was loaded, and whenever the feed is followed again and reloaded.
        self.loaded = asyncio.Event()
        self.listening = False
        self._entries: dict[UUID, _Entry] = {}
        self._by_identity: dict[bytes, _Entry] = {}
        self._by_public_key: dict[bytes, _Entry] = {}
        self._reload = False
        self._ids: set[UUID] = set()
        self._identities: set[str] = set()
        self._public_keys: set[bytes] = set()
        self._missed: dict[bytes, float] = {}
        self._looking: set[bytes] = set()  # names (b"i"/b"k" + identity) whose fetch is under way
        # Names a lookup found only among credentials whose city does not take their mode: why
        # the handshake is refused, for its log line (bounded like _missed, cleared with it).
        self._disallowed: dict[bytes, str] = {}
        self._undecryptable: list[UUID] = []
        self._wake = asyncio.Event()
        self.follower = ChannelFollower(
            db.pool, CREDENTIALS_CHANNEL, self._heard, on_listening=self._listening,
            application_name="fleet-credentials",
            lost_message="lost the feed of credential changes; device keys are served as last loaded",
            check_s=check_s, retry_s=retry_s)

    def __len__(self) -> int:
        return len(self._entries)

    # DeviceKeys (synchronous: called from inside the handshake).

    def psk(self, identity: bytes) -> tuple[bytes, KnownCredential] | None:
        entry = self._by_identity.get(identity)
        if entry is not None:
            return entry.key, entry.known
        try:
            text = identity.decode("utf-8")
        except UnicodeDecodeError:
            return None  # Fleet stores UTF-8 identities only
        if self._may_look_up(b"i" + identity):
            self._identities.add(text)
            self._wake.set()
        return None

    def rpk(self, public_key_xy: bytes) -> KnownCredential | None:
        entry = self._by_public_key.get(public_key_xy)
        if entry is not None:
            return entry.known
        if len(public_key_xy) == 64 and self._may_look_up(b"k" + public_key_xy):
            self._public_keys.add(public_key_xy)
            self._wake.set()
        return None

    def looking_up(self, mode: str, identity: bytes) -> bool:
        return _lookup_name(mode, identity) in self._looking

    def refusal(self, mode: str, identity: bytes) -> str | None:
        """Why a PSK identity or raw public key the directory does not hold is refused, when it
        knows more than "unknown" (protocols.coap.dtls logs it)."""
        return self._disallowed.get(_lookup_name(mode, identity))

    def get(self, credential_id: UUID) -> KnownCredential | None:
        entry = self._entries.get(credential_id)
        return entry.known if entry else None

    def _may_look_up(self, name: bytes) -> bool:
        now = time.monotonic()
        if self._missed.get(name, 0.0) > now:
            return False
        if len(self._identities) + len(self._public_keys) >= self.max_pending_lookups:
            return False
        if len(self._missed) > 10 * self.max_pending_lookups:
            self._missed = {k: v for k, v in self._missed.items() if v > now}
            self._disallowed.clear()
        self._missed[name] = now + self.miss_ttl_s
        self._looking.add(name)
        return True

    # Following the database.

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.follower.run())
            tasks.create_task(self._work())

    def _listening(self, now: bool) -> None:
        self.listening = now
        if now:
            self._reload = True
            self._wake.set()

    def _heard(self, payload: str) -> None:
        if payload == "*":
            self._reload = True
        else:
            try:
                self._ids.add(UUID(payload))
            except ValueError:
                self._reload = True  # not ours to parse: loading everything is always right
        self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            reload, ids, identities, keys = self._reload, self._ids, self._identities, self._public_keys
            self._reload, self._ids, self._identities, self._public_keys = False, set(), set(), set()
            try:
                async with self.db.system_tx() as conn:
                    repo = CredentialRepository(conn)
                    if reload:
                        self._replace_all(await self._entries_of(await repo.known()))
                        self.loaded.set()
                    elif ids:
                        self._apply(ids, await repo.known_by_ids(list(ids)))
                    if identities:
                        self._apply(set(), await repo.known_by_identities(list(identities)))
                    if keys:
                        self._apply(set(), await repo.known_by_public_keys(list(keys)))
                    if identities or keys:
                        self._note_disallowed(await repo.of_disallowed_modes(list(identities), list(keys)))
                self._looking -= {b"i" + i.encode() for i in identities} | {b"k" + k for k in keys}
            except LOST as exc:
                log.info("credential lookup failed; trying again", error=f"{type(exc).__name__}: {exc}")
                self._reload = self._reload or reload
                self._ids |= ids
                self._identities |= identities
                self._public_keys |= keys
                await asyncio.sleep(self.retry_s)
                self._wake.set()

    def _entry(self, row: asyncpg.Record, held: _Entry | None = None) -> _Entry | None:
        known = KnownCredential(row["id"], row["device_id"], row["tenant_id"], row["endpoint"], row["purpose"],
                                row["mode"], row["state"])
        if row["mode"] == "rpk":
            return _Entry(known, None, None, bytes(row["public_key_xy"]))
        nonce = bytes(row["key_nonce"])
        owner = KeyOwner.of(row)
        if held is not None and held.nonce == nonce and held.key is not None and _owner(held.known) == owner:
            key = held.key  # sealed once per credential id: same owner and nonce, same key
        else:
            key = self.cipher.open(owner, row["key_ciphertext"], row["key_nonce"])
        if key is None:
            self._undecryptable.append(row["id"])
            return None
        return _Entry(known, row["identity"].encode("utf-8"), key, None, nonce)

    def _report_undecryptable(self) -> None:
        """One line however many: a node started with another key than the one that stored them."""
        if self._undecryptable:
            log.error("device keys do not decrypt under FLEET_CREDENTIALS_KEY (another key than the one that "
                      "stored them?); those devices cannot authenticate", credentials=len(self._undecryptable),
                      first=str(self._undecryptable[0]))
            self._undecryptable = []

    async def _entries_of(self, rows: list[asyncpg.Record]) -> dict[UUID, _Entry]:
        """The entries of a full load, built a slice at a time: a reload of every city's
        credentials (an import, a city's modes changed, a reconnection) must not hold the
        event loop, and the handshakes with it, for the whole of it. A key already held under
        the same nonce is not decrypted again."""
        entries: dict[UUID, _Entry] = {}
        for start in range(0, len(rows), RELOAD_SLICE):
            for row in rows[start:start + RELOAD_SLICE]:
                entry = self._entry(row, self._entries.get(row["id"]))
                if entry is not None:
                    entries[row["id"]] = entry
            await asyncio.sleep(0)
        return entries

    def _replace_all(self, entries: dict[UUID, _Entry]) -> None:
        self._report_undecryptable()
        gone = [e for credential_id, e in self._entries.items() if credential_id not in entries]
        self._entries = entries
        self._by_identity = {e.identity: e for e in entries.values() if e.identity is not None}
        self._by_public_key = {e.public_key_xy: e for e in entries.values() if e.public_key_xy is not None}
        self._missed.clear()
        self._disallowed.clear()
        log.debug("credentials loaded", credentials=len(entries))
        self._removed(gone)

    def _apply(self, asked: set[UUID], rows: list[asyncpg.Record]) -> None:
        """Store what was found; an id asked about and not found left (retired, deleted)."""
        found: set[UUID] = set()
        gone: list[_Entry] = []
        for row in rows:
            found.add(row["id"])
            entry = self._entry(row)
            old = self._entries.pop(row["id"], None)
            if old is not None:
                self._unindex(old)
            if entry is None:
                if old is not None:
                    gone.append(old)  # it no longer decrypts (moved to another owner): its sessions end
                continue
            self._entries[row["id"]] = entry
            if entry.identity is not None:
                self._by_identity[entry.identity] = entry
                self._missed.pop(b"i" + entry.identity, None)
            if entry.public_key_xy is not None:
                self._by_public_key[entry.public_key_xy] = entry
                self._missed.pop(b"k" + entry.public_key_xy, None)
        self._report_undecryptable()
        for credential_id in asked - found:
            old = self._entries.pop(credential_id, None)
            if old is not None:
                self._unindex(old)
                gone.append(old)
        self._removed(gone)

    def _note_disallowed(self, rows: list[asyncpg.Record]) -> None:
        for row in rows:
            name = b"i" + row["identity"].encode("utf-8") if row["identity"] is not None else b"k" + bytes(
                row["public_key_xy"])
            self._disallowed[name] = f"the city of {row['endpoint']!r} does not take {row['mode']} devices"

    def _unindex(self, entry: _Entry) -> None:
        if entry.identity is not None and self._by_identity.get(entry.identity) is entry:
            del self._by_identity[entry.identity]
        if entry.public_key_xy is not None and self._by_public_key.get(entry.public_key_xy) is entry:
            del self._by_public_key[entry.public_key_xy]

    def _removed(self, gone: list[_Entry]) -> None:
        """Tell each hook once per change, with everything that left in it: a mass revocation or
        a reload must cost each hook (one pass over the DTLS sessions) once, not once per key."""
        if not gone:
            return
        known = [entry.known for entry in gone]
        log.debug("credentials left the directory", credentials=len(known), first=str(known[0].credential_id))
        for hook in self.removal_hooks:
            try:
                hook(known)
            except Exception:
                log.exception("a hook on removed credentials failed", credentials=len(known))
