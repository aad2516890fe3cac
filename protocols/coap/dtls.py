"""DTLS 1.2 for coaps:// (RFC 7925: PSK and raw public keys), tinydtls driven through ctypes.

tinydtls is the C library inside DTLSSocket==0.2.3 (pinned exactly: this module relies on the
layout of its structs, checked against the tinydtls 0.8.6 headers of that release). DTLSSocket's
Cython class offers PSK only and one context per peer; here one tinydtls context serves a whole
socket, with a session per peer address, and the two ECDSA callbacks give raw public keys.
Cipher suites are exactly RFC 7925's: TLS_PSK_WITH_AES_128_CCM_8 and
TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (P-256). Fleet implements no cryptography itself.

Every tinydtls call and callback runs synchronously on the event loop: the library is not
thread-safe, and its callbacks (key lookups included) must not await.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import importlib.util
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = structlog.get_logger("fleet.coap.dtls")

# tinydtls constants (alert.h, global.h, dtls.h of tinydtls 0.8.6)
PSK_AES_128_CCM_8 = 0xC0A8
ECDHE_ECDSA_AES_128_CCM_8 = 0xC0AE
_EVENT_CONNECTED = 0x01DE
_ALERT_FATAL = 2
_ALERT_CLOSE_NOTIFY = 0
_PSK_HINT, _PSK_IDENTITY, _PSK_KEY = 0, 1, 2
_CONTENT_CCS, _CONTENT_ALERT, _CONTENT_HANDSHAKE, _CONTENT_APPLICATION = 20, 21, 22, 23
_CLIENT_HELLO = 1
_RECORD_HEADER = 13
_HANDSHAKE_HEADER = 12
_MAX_DATAGRAM = 65536


def _fatal(description: int) -> int:
    """What a callback returns to make tinydtls send a fatal alert (alert.h dtls_alert_fatal_create)."""
    return -((_ALERT_FATAL << 8) | description)


_DECRYPT_ERROR = _fatal(51)     # unknown PSK identity: RFC 4279 §2 allows decrypt_error (reveals less)
_BAD_CERTIFICATE = _fatal(42)   # a raw public key nobody registered
_INTERNAL_ERROR = _fatal(80)


class DtlsError(Exception):
    """A DTLS handshake failed or a session ended."""


# --- the binding -------------------------------------------------------------------------------

class _Session(ctypes.Structure):
    """session_t for POSIX sockets (session.h): socklen_t size, then a sockaddr union that is
    sockaddr_storage-sized and 8-aligned (so it starts at 8), then ifindex: 144 bytes."""
    _fields_ = [("size", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("addr", ctypes.c_ubyte * 128),
                ("ifindex", ctypes.c_int), ("_tail", ctypes.c_int)]


class _EcdsaKey(ctypes.Structure):
    """dtls_ecdsa_key_t (crypto.h): curve (0 = secp256r1), then pointers to 32-byte priv, x, y."""
    _fields_ = [("curve", ctypes.c_int), ("priv_key", ctypes.c_void_p), ("pub_key_x", ctypes.c_void_p),
                ("pub_key_y", ctypes.c_void_p)]


class _Handler(ctypes.Structure):
    """dtls_handler_t (dtls.h) as built here (DTLS_PSK and DTLS_ECC both defined in
    dtls_config.h): write, read, event, get_user_parameters, get_psk_info, get_ecdsa_key,
    verify_ecdsa_key. A NULL entry disables that feature (no ECDSA without get_ecdsa_key)."""
    _fields_ = [(name, ctypes.c_void_p) for name in
                ("write", "read", "event", "get_user_parameters", "get_psk_info", "get_ecdsa_key",
                 "verify_ecdsa_key")]


# Pointers are passed as plain integers (c_void_p): no ctypes object per callback argument.
_WRITE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_EVENT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_ushort)
_USER_PARAMETERS = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_PSK_INFO = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                             ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t)
_GET_KEY = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_VERIFY_KEY = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                               ctypes.c_size_t)

# dtls_context_t (dtls.h, no WITH_CONTIKI): cookie_secret[12], clock_time_t (uint32) age,
# peers*, sendqueue*, app*, then h* -- 12 + 4 + 3 * 8 = 40 on LP64. dtls_set_handler() is a
# static inline in the header, not an exported symbol, so we store the pointer there ourselves.
_CONTEXT_HANDLER_OFFSET = 40
assert ctypes.sizeof(_Session) == 144 and _Session.addr.offset == 8 and _Session.ifindex.offset == 136
assert ctypes.sizeof(_Handler) == 56 and ctypes.sizeof(_EcdsaKey) == 32
assert ctypes.sizeof(ctypes.c_void_p) == 8, "the struct offsets above are for 64-bit builds"


def _load():
    spec = importlib.util.find_spec("DTLSSocket.dtls")
    if spec is None or spec.origin is None:
        raise ImportError("DTLSSocket (tinydtls) is not installed: pip install DTLSSocket==0.2.3")
    lib = ctypes.CDLL(spec.origin)
    vp, cp, i, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
    for name, restype, argtypes in (
            ("dtls_init", None, []),
            ("dtls_set_log_level", None, [i]),
            ("dtls_new_context", vp, [vp]),
            ("dtls_free_context", None, [vp]),
            ("dtls_handle_message", i, [vp, vp, vp, i]),
            ("dtls_write", i, [vp, vp, cp, sz]),
            ("dtls_connect", i, [vp, vp]),
            ("dtls_close", i, [vp, vp]),
            ("dtls_get_peer", vp, [vp, vp]),
            ("dtls_reset_peer", None, [vp, vp]),
            ("dtls_check_retransmit", None, [vp, ctypes.POINTER(ctypes.c_uint32)]),
            ("dtls_ticks", None, [ctypes.POINTER(ctypes.c_uint32)])):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    lib.dtls_init()
    lib.dtls_set_log_level(0)  # tinydtls prints warnings to stderr; we count and log ourselves
    return lib


_lib = None


def _tinydtls():
    global _lib  # noqa: PLW0603 - the shared library is loaded once per process
    if _lib is None:
        _lib = _load()
    return _lib


# --- keys and identities -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PeerIdentity:
    mode: str            # "psk" | "rpk"
    identity: bytes      # PSK identity, or the peer's raw public key x||y (64 bytes, P-256)
    credential: object   # what DeviceKeys returned for it (opaque here)


class DeviceKeys(Protocol):
    """Looked up synchronously inside tinydtls' callbacks (never awaits)."""

    def psk(self, identity: bytes) -> tuple[bytes, object] | None: ...   # (key, credential)

    def rpk(self, public_key_xy: bytes) -> object | None: ...            # credential


@dataclass(frozen=True, slots=True)
class PskCredentials:
    identity: bytes
    key: bytes


@dataclass(frozen=True, slots=True)
class RpkCredentials:
    private_key: ec.EllipticCurvePrivateKey
    server_public_key: object  # ec.EllipticCurvePublicKey, SubjectPublicKeyInfo DER, or raw x||y


def public_key_xy(key) -> bytes:
    """The raw x||y (64 bytes) of a P-256 key: what tinydtls shows of a peer's public key.
    Takes a private or public key object, SubjectPublicKeyInfo DER, PEM, or x||y itself."""
    if isinstance(key, bytes | bytearray | memoryview):
        key = bytes(key)
        if len(key) == 64:
            return key
        key = (serialization.load_pem_public_key(key) if key.lstrip().startswith(b"-----")
               else serialization.load_der_public_key(key))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("raw public keys must be P-256 (secp256r1)")
    numbers = key.public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


class _KeyPair:
    """A P-256 private key as tinydtls' dtls_ecdsa_key_t, with the buffers it points into."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("raw public keys must be P-256 (secp256r1)")
        xy = public_key_xy(private_key)
        self._buffers = [ctypes.create_string_buffer(part, 32) for part in (
            private_key.private_numbers().private_value.to_bytes(32, "big"), xy[:32], xy[32:])]
        priv, x, y = (ctypes.addressof(buffer) for buffer in self._buffers)
        self.struct = _EcdsaKey(0, priv, x, y)
        self.address = ctypes.addressof(self.struct)


def _sockaddr_in6(address) -> bytes:
    """struct sockaddr_in6 for a socket address as asyncio gives it ('::ffff:1.2.3.4', port, ...).
    Flow info is left 0: tinydtls hashes the whole session, so it must not vary per datagram."""
    host, port = address[0], address[1]
    scope_id = address[3] if len(address) > 3 else 0
    if ":" not in host:
        host = "::ffff:" + host
    return struct.pack("=HHI16sI", socket.AF_INET6, socket.htons(port), 0,
                       socket.inet_pton(socket.AF_INET6, host), scope_id)


def _session_for(address) -> _Session:
    session = _Session()
    session.size = 28  # sizeof(struct sockaddr_in6)
    ctypes.memmove(ctypes.addressof(session) + 8, _sockaddr_in6(address), 28)
    return session


def _records(data: bytes):
    """(content type, epoch, offset of the fragment) of each DTLS record in a datagram."""
    offset = 0
    while offset + _RECORD_HEADER <= len(data):
        length = (data[offset + 11] << 8) | data[offset + 12]
        yield data[offset], (data[offset + 3] << 8) | data[offset + 4], offset + _RECORD_HEADER
        offset += _RECORD_HEADER + length


def _client_hello(data: bytes) -> tuple[bool, tuple[int, ...]] | None:
    """(has a cookie, offered cipher suites) of a datagram starting with a ClientHello, else None."""
    if len(data) < _RECORD_HEADER + _HANDSHAKE_HEADER + 35 or data[0] != _CONTENT_HANDSHAKE \
            or data[3] | data[4] or data[_RECORD_HEADER] != _CLIENT_HELLO:
        return None
    at = _RECORD_HEADER + _HANDSHAKE_HEADER + 34  # client_version(2) + random(32)
    at += 1 + data[at]  # session id
    if at >= len(data):
        return None
    cookie_length = data[at]
    at += 1 + cookie_length
    if at + 2 > len(data):
        return None
    suites_end = min(len(data), at + 2 + ((data[at] << 8) | data[at + 1]))
    suites = tuple((data[i] << 8) | data[i + 1] for i in range(at + 2, suites_end - 1, 2))
    return cookie_length > 0, suites


class _Engine:
    """One tinydtls context and its callbacks; subclasses say what the callbacks do."""

    suites: tuple[int, ...] = ()

    def __init__(self, own_key: ec.EllipticCurvePrivateKey | None) -> None:
        self._lib = _tinydtls()
        self._key = _KeyPair(own_key) if own_key is not None else None
        self._in = ctypes.create_string_buffer(_MAX_DATAGRAM)  # tinydtls decrypts in place
        self._in_address = ctypes.addressof(self._in)
        self._ticks = ctypes.c_uint32()
        self._next = ctypes.c_uint32()
        self._callbacks = [
            _WRITE(self._c_write), _WRITE(self._c_read), _EVENT(self._c_event),
            _USER_PARAMETERS(self._c_user_parameters), _PSK_INFO(self._c_psk_info),
            _GET_KEY(self._c_get_key), _VERIFY_KEY(self._c_verify_key)]
        pointers = [ctypes.cast(callback, ctypes.c_void_p).value for callback in self._callbacks]
        if self._key is None and not self._uses_rpk():
            pointers[5] = pointers[6] = None
        if not self._uses_psk():
            pointers[4] = None
        self._handler = _Handler(*pointers)
        self._ctx = self._lib.dtls_new_context(None)
        if not self._ctx:
            raise MemoryError("tinydtls could not allocate a context")
        ctypes.c_void_p.from_address(self._ctx + _CONTEXT_HANDLER_OFFSET).value = ctypes.addressof(self._handler)
        self._retransmit_timer: asyncio.TimerHandle | None = None
        self._retransmit_at = float("inf")

    def _uses_psk(self) -> bool:
        return PSK_AES_128_CCM_8 in self.suites

    def _uses_rpk(self) -> bool:
        return ECDHE_ECDSA_AES_128_CCM_8 in self.suites

    def _free(self) -> None:
        if self._retransmit_timer is not None:
            self._retransmit_timer.cancel()
            self._retransmit_timer = None
        if self._ctx:
            ctx, self._ctx = self._ctx, None
            self._lib.dtls_free_context(ctx)

    def _handle(self, session_address: int, data: bytes) -> int:
        n = len(data)
        if n > _MAX_DATAGRAM:
            return -1
        ctypes.memmove(self._in_address, data, n)
        return self._lib.dtls_handle_message(self._ctx, session_address, self._in_address, n)

    # Retransmission of handshake flights: tinydtls queues them and says when the next is due.
    def _schedule_retransmit(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._ctx:
            return
        self._lib.dtls_check_retransmit(self._ctx, ctypes.byref(self._next))
        if not self._next.value:
            return
        self._lib.dtls_ticks(ctypes.byref(self._ticks))
        delay_ms = (self._next.value - self._ticks.value) & 0xFFFFFFFF
        delay_s = 0.0 if delay_ms >= 0x80000000 else delay_ms / 1000
        due = loop.time() + delay_s
        if due < self._retransmit_at:
            if self._retransmit_timer is not None:
                self._retransmit_timer.cancel()
            self._retransmit_at = due
            self._retransmit_timer = loop.call_at(due, self._retransmit_due, loop)

    def _retransmit_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._retransmit_timer, self._retransmit_at = None, float("inf")
        self._schedule_retransmit(loop)

    # ctypes callbacks: an exception must never escape (ctypes would return 0, which for
    # verify_ecdsa_key means "accepted").
    def _c_write(self, ctx, session, buf, length):
        try:
            return self._write(session, ctypes.string_at(buf, length))
        except Exception:  # noqa: BLE001
            log.exception("DTLS write failed")
            return -1

    def _c_read(self, ctx, session, buf, length):
        try:
            self._read(session, ctypes.string_at(buf, length))
        except Exception:  # noqa: BLE001
            log.exception("handling a DTLS record failed")
        return 0

    def _c_event(self, ctx, session, level, code):
        try:
            self._event(session, level, code)
        except Exception:  # noqa: BLE001
            log.exception("handling a DTLS event failed")
        return 0

    def _c_user_parameters(self, ctx, session, parameters):
        suites = (ctypes.c_int * 5).from_address(parameters)
        for i in range(5):
            suites[i] = self.suites[i] if i < len(self.suites) else 0

    def _c_psk_info(self, ctx, session, kind, desc, desc_length, result, result_length):
        try:
            value = self._psk_info(session, kind, ctypes.string_at(desc, desc_length) if desc else b"")
        except Exception:  # noqa: BLE001
            log.exception("PSK lookup failed")
            return _INTERNAL_ERROR
        if isinstance(value, int):
            return value
        if len(value) > result_length:
            return _INTERNAL_ERROR
        ctypes.memmove(result, value, len(value))
        return len(value)

    def _c_get_key(self, ctx, session, result):
        if self._key is None:
            return -1
        self._server_hello()
        ctypes.c_void_p.from_address(result).value = self._key.address
        return 0

    def _c_verify_key(self, ctx, session, x, y, size):
        try:
            return self._verify_key(session, ctypes.string_at(x, size) + ctypes.string_at(y, size))
        except Exception:  # noqa: BLE001
            log.exception("raw public key lookup failed")
            return _INTERNAL_ERROR

    def _write(self, session: int, record: bytes) -> int:
        raise NotImplementedError

    def _read(self, session: int, plaintext: bytes) -> None:
        raise NotImplementedError

    def _event(self, session: int, level: int, code: int) -> None:
        raise NotImplementedError

    def _psk_info(self, session: int, kind: int, description: bytes) -> bytes | int:
        return _INTERNAL_ERROR

    def _verify_key(self, session: int, xy: bytes) -> int:
        return _BAD_CERTIFICATE

    def _server_hello(self) -> None:
        pass


# --- server --------------------------------------------------------------------------------------

class _Peer:
    """One peer address: its tinydtls session (kept, so no struct is built per datagram) and
    what we know of its handshake."""
    __slots__ = ("address", "session", "pointer", "seen", "since", "mode", "pending", "identity",
                 "ccs_seen", "ancdata")

    def __init__(self, address, now: float) -> None:
        self.address = address
        self.session = _session_for(address)
        self.pointer = ctypes.addressof(self.session)
        self.seen = self.since = now
        self.mode = "psk"
        self.pending: PeerIdentity | None = None   # found by the key callbacks, not yet proven
        self.identity: PeerIdentity | None = None  # set once the handshake completed
        self.ccs_seen = False
        self.ancdata = ()  # its last datagram's IPV6_PKTINFO: answers leave from the address it wrote to


class _Rate:
    """A token bucket: `rate` per second, bursts of up to one second's worth."""
    __slots__ = ("rate", "tokens", "at")

    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.at = rate, max(rate, 1.0), 0.0

    def ready(self, now: float) -> bool:
        """Whether a token is there (taken with `take` once the handshake really starts)."""
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens >= 1.0

    def take(self) -> None:
        self.tokens -= 1.0


class DtlsServer(_Engine, asyncio.DatagramProtocol):
    """The DTLS side of one coaps socket: one tinydtls context, a session per peer address.

    Handshakes: ClientHellos are answered with a cookie first (tinydtls, stateless); a
    ClientHello carrying a cookie starts a handshake and is subject to the rate limits
    (`handshakes_per_s` for raw public keys, whose ECC costs tens of milliseconds of the event
    loop each, `psk_handshakes_per_s` for PSK) and to `max_peers`; over either it is dropped,
    and the device retransmits. A handshake not finished within `handshake_timeout_s`, and a
    session idle for `idle_s`, are closed. Records are replay-checked by tinydtls (RFC 6347
    §4.1.2.6 window of 64).
    """

    def __init__(self, keys: DeviceKeys, server_key: ec.EllipticCurvePrivateKey | None, *,
                 on_plaintext: Callable[[bytes, tuple], None], max_peers: int = 100_000,
                 idle_s: float = 1800.0, handshakes_per_s: float = 5.0, psk_handshakes_per_s: float = 1000.0,
                 handshake_timeout_s: float = 30.0) -> None:
        self.suites = ((ECDHE_ECDSA_AES_128_CCM_8,) if server_key is not None else ()) + (PSK_AES_128_CCM_8,)
        super().__init__(server_key)
        self.keys = keys
        self.on_plaintext = on_plaintext
        self.max_peers = max_peers
        self.idle_s = idle_s
        self.handshake_timeout_s = handshake_timeout_s
        self._rates = {"rpk": _Rate(handshakes_per_s), "psk": _Rate(psk_handshakes_per_s)}
        self.transport: asyncio.DatagramTransport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._peers: dict[tuple, _Peer] = {}        # (host, port) -> peer with tinydtls state
        self._handshaking: dict[tuple, _Peer] = {}  # the subset still in its handshake
        self._by_session: dict[bytes, _Peer] = {}   # sockaddr_in6 bytes -> peer, for callbacks
        self._scratch = _Session()  # for stateless ClientHellos (cookie exchange) of unknown addresses
        self._scratch_address = None
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._last_idle_sweep = 0.0
        # counters
        self.handshakes_ok = {"psk": 0, "rpk": 0}
        self.handshakes_failed = {"psk": 0, "rpk": 0}
        self.handshakes_limited = 0
        self.records_dropped = 0
        self.records_in = 0
        self.records_out = 0
        self.evicted = 0

    @property
    def peers(self) -> int:
        """Addresses with DTLS state (sessions and handshakes under way)."""
        return len(self._peers)

    @property
    def sessions(self) -> int:
        return len(self._peers) - len(self._handshaking)

    # asyncio.DatagramProtocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        # aiocoap's recvmsg transport (with the local address of each datagram), or asyncio's
        self._sendmsg = getattr(transport, "sendmsg", None)
        self._sweep_timer = self.loop.call_later(self._sweep_interval(), self._sweep)

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        self._peers.clear()
        self._handshaking.clear()
        self._by_session.clear()
        self._free()

    def datagram_msg_received(self, data, ancdata, flags, address) -> None:
        """The same, from aiocoap's recvmsg transport (several datagrams per wakeup), with the
        ancillary data (IPV6_PKTINFO) that on_plaintext finds in `ancdata`."""
        self.ancdata = ancdata
        self.datagram_received(data, address)

    def datagram_errqueue_received(self, data, ancdata, flags, address) -> None:
        pass

    def error_received(self, exc) -> None:
        log.debug("coaps socket error", error=str(exc))

    def datagram_received(self, data: bytes, address) -> None:
        if not self._ctx:
            return
        key = address[:2]
        peer = self._peers.get(key)
        if peer is not None and peer.identity is not None and data and data[0] == _CONTENT_APPLICATION:
            # An established session's application data: the hot path.
            peer.seen = self.loop.time()
            peer.ancdata = self.ancdata
            self._current = peer  # the callbacks need not look the session up
            try:
                self._handle(peer.pointer, data)
            finally:
                self._current = None
            return
        self._handshake_datagram(key, peer, data, address)

    def _handshake_datagram(self, key, peer: _Peer | None, data: bytes, address) -> None:
        now = self.loop.time()
        hello = _client_hello(data)
        if hello is not None and hello[0]:
            # A ClientHello with a cookie: tinydtls will create (or restart) the peer's state.
            mode = self._mode_of(hello[1])
            if peer is None and len(self._peers) >= self.max_peers:
                self.records_dropped += 1
                return
            if not self._rates[mode].ready(now):
                self.handshakes_limited += 1
                return
            fresh = peer is None
            if fresh:
                peer = _Peer(address, now)
                self._peers[key] = peer
                self._by_session[bytes(peer.session.addr[:28])] = peer
            self._hello = (peer, mode, now)
            try:
                self._handle(peer.pointer, data)
            finally:
                self._hello = None
            if fresh and key not in self._handshaking or not self._lib.dtls_get_peer(self._ctx, peer.pointer):
                # A stale or forged cookie: tinydtls asked again, statelessly (and an existing
                # session goes on untouched: a spoofed ClientHello must not end it).
                self._drop(key, peer)
        elif peer is None:
            if hello is None:
                self.records_dropped += 1  # no state for this address: tinydtls would drop it too
                return
            self._stateless(address, data)
            return
        else:
            peer.seen, peer.ancdata = now, self.ancdata
            finished = False
            ccs = peer.ccs_seen
            for content_type, epoch, _ in _records(data):
                if content_type == _CONTENT_CCS:
                    ccs = True
                elif content_type == _CONTENT_HANDSHAKE and epoch and ccs:
                    finished = True
            peer.ccs_seen = ccs
            result = self._handle(peer.pointer, data)
            if self._peers.get(key) is not peer:
                pass  # closed by an alert while handling it
            elif not self._lib.dtls_get_peer(self._ctx, peer.pointer):
                self._fail(key, peer, "handshake refused" if result < 0 else "closed")
            elif peer.identity is None and finished:
                # The Finished after ChangeCipherSpec did not decrypt: the device holds another
                # key for that identity. tinydtls drops such a record silently; we close.
                self._reset(peer)
                self._fail(key, peer, "wrong key")
        self._schedule_retransmit(self.loop)

    def _stateless(self, address, data: bytes) -> None:
        if self._scratch_address != address[:2]:
            self._scratch = _session_for(address)
            self._scratch_address = address[:2]
        self._stateless_address = address
        try:
            self._handle(ctypes.addressof(self._scratch), data)
        finally:
            self._stateless_address = None

    def _mode_of(self, offered: tuple[int, ...]) -> str:
        """The suite tinydtls will pick: the client's first that we accept."""
        for suite in offered:
            if suite in self.suites:
                return "rpk" if suite == ECDHE_ECDSA_AES_128_CCM_8 else "psk"
        return "psk"

    _hello: tuple | None = None  # (peer, mode, when) while a ClientHello with a cookie is handled

    def _server_hello(self) -> None:
        """tinydtls accepted the cookie and answers with its ServerHello: the peer's state starts
        over (a session it had is gone), and its handshake counts from now."""
        if self._hello is None:
            return
        peer, mode, now = self._hello
        self._hello = None
        # Paid here, not for every ClientHello: one whose cookie tinydtls refuses (forged, from
        # anywhere) costs us no ECC, and must not use up the devices' handshakes.
        self._rates[mode].take()
        peer.mode, peer.since, peer.seen, peer.pending, peer.identity, peer.ccs_seen, peer.ancdata = \
            mode, now, now, None, None, False, self.ancdata
        self._handshaking[peer.address[:2]] = peer

    def _drop(self, key, peer: _Peer) -> None:
        if self._peers.get(key) is peer:
            del self._peers[key]
            self._by_session.pop(bytes(peer.session.addr[:28]), None)
        if self._handshaking.get(key) is peer:
            del self._handshaking[key]

    def _fail(self, key, peer: _Peer, why: str) -> None:
        if peer.identity is None:
            self.handshakes_failed[peer.mode] += 1
            log.info("DTLS handshake failed", peer=peer.address[0], port=peer.address[1], mode=peer.mode,
                     reason=why)
        self._drop(key, peer)

    def _reset(self, peer: _Peer) -> None:
        """Close the peer's tinydtls state (close_notify to the peer if it was connected);
        before _drop, so that the callbacks still find its address."""
        pointer = self._lib.dtls_get_peer(self._ctx, peer.pointer)
        if pointer:
            self._on_behalf_of(peer, self._lib.dtls_reset_peer, pointer)

    def _on_behalf_of(self, peer: _Peer, function, *args):
        """Call tinydtls for `peer`: its callbacks then need not look the session up (and a
        call made from inside another peer's callback goes to the right address)."""
        previous, self._current = self._current, peer
        try:
            return function(self._ctx, *args)
        finally:
            self._current = previous

    def _peer_of(self, session: int) -> _Peer | None:
        return self._by_session.get(ctypes.string_at(session + 8, 28))

    # callbacks
    _current: _Peer | None = None  # whose record is being handled or written, if known

    def _write(self, session: int, record: bytes) -> int:
        peer = self._current or self._peer_of(session)
        if peer is not None:
            address, ancdata = peer.address, peer.ancdata
        else:
            address, ancdata = self._stateless_address, self.ancdata
        if self.transport is None or address is None:
            return -1
        self.records_out += 1
        if self._sendmsg is not None:
            self._sendmsg(record, ancdata, 0, address)
        else:
            self.transport.sendto(record, address)
        return len(record)

    _stateless_address = None
    _sendmsg = None
    ancdata = ()  # of the datagram being handled

    def _read(self, session: int, plaintext: bytes) -> None:
        peer = self._current or self._peer_of(session)
        if peer is None or peer.identity is None:
            self.records_dropped += 1
            return
        self.records_in += 1
        self.on_plaintext(plaintext, peer.address)

    def _event(self, session: int, level: int, code: int) -> None:
        peer = self._peer_of(session)
        if peer is None:
            return
        key = peer.address[:2]
        if level == 0 and code == _EVENT_CONNECTED:
            if peer.pending is None:  # cannot happen: a handshake always went through a key callback
                self._fail(key, peer, "no credential")
                return
            peer.identity = peer.pending
            self._handshaking.pop(key, None)
            self.handshakes_ok[peer.mode] += 1
            log.debug("DTLS session established", peer=peer.address[0], port=peer.address[1], mode=peer.mode)
        elif level == _ALERT_FATAL or code == _ALERT_CLOSE_NOTIFY:
            # tinydtls has removed the peer already (handle_alert)
            self._fail(key, peer, f"alert {code}")

    def _psk_info(self, session: int, kind: int, description: bytes) -> bytes | int:
        if kind == _PSK_HINT:  # asked while sending the ServerHello flight
            self._server_hello()
            return b""
        if kind != _PSK_KEY:
            return _INTERNAL_ERROR
        found = self.keys.psk(description)
        peer = self._peer_of(session)
        if found is None or peer is None:
            return _DECRYPT_ERROR
        key, credential = found
        peer.pending = PeerIdentity("psk", description, credential)
        return key

    def _verify_key(self, session: int, xy: bytes) -> int:
        credential = self.keys.rpk(xy)
        peer = self._peer_of(session)
        if credential is None or peer is None:
            return _BAD_CERTIFICATE
        peer.pending = PeerIdentity("rpk", xy, credential)
        return 0

    # the interface the coaps listener uses
    def send(self, plaintext: bytes, address) -> bool:
        """Encrypt and send one datagram to a peer; False if there is no session with it."""
        peer = self._peers.get(address[:2])
        if peer is None or peer.identity is None or not self._ctx:
            return False
        return self._on_behalf_of(peer, self._lib.dtls_write, peer.pointer, plaintext, len(plaintext)) >= 0

    def identity_of(self, address) -> PeerIdentity | None:
        """Who the peer at this address proved to be; None without a finished handshake."""
        peer = self._peers.get(address[:2])
        return peer.identity if peer is not None else None

    def forget_credential(self, credential_matcher: Callable[[object], bool]) -> int:
        """Close the sessions (and handshakes) of credentials that match: rotated or revoked."""
        closed = 0
        for key, peer in list(self._peers.items()):
            known = peer.identity or peer.pending
            if known is not None and credential_matcher(known.credential):
                self._reset(peer)
                self._drop(key, peer)
                closed += 1
        return closed

    def close(self) -> None:
        """Close every session (close_notify to each peer) and the socket."""
        if self._ctx:
            for peer in list(self._peers.values()):
                if peer.identity is not None:
                    self._on_behalf_of(peer, self._lib.dtls_close, peer.pointer)
        if self.transport is not None:
            self.transport.close()

    # eviction
    def _sweep_interval(self) -> float:
        return max(0.5, min(5.0, self.handshake_timeout_s / 4))

    def _sweep(self) -> None:
        now = self.loop.time()
        for key, peer in list(self._handshaking.items()):
            if now - peer.since > self.handshake_timeout_s:
                self._reset(peer)
                self._fail(key, peer, "timed out")
        if now - self._last_idle_sweep >= min(self.idle_s / 8, 60.0):
            self._last_idle_sweep = now
            self.evict_idle(now)
        self._sweep_timer = self.loop.call_later(self._sweep_interval(), self._sweep)

    def evict_idle(self, now: float | None = None) -> int:
        """Close sessions idle for longer than idle_s; how many."""
        now = self.loop.time() if now is None else now
        deadline = now - self.idle_s
        evicted = 0
        for key, peer in list(self._peers.items()):
            if peer.identity is not None and peer.seen < deadline:
                self._reset(peer)
                self._drop(key, peer)
                evicted += 1
        self.evicted += evicted
        return evicted


# --- client --------------------------------------------------------------------------------------

class DtlsClient(_Engine):
    """The client side of one DTLS session (a device, a simulator, the bench), PSK or RPK."""

    def __init__(self, credentials: PskCredentials | RpkCredentials, remote, *,
                 send: Callable[[bytes], None], on_plaintext: Callable[[bytes], None],
                 on_connected: Callable[[], None], on_failed: Callable[[DtlsError], None]) -> None:
        self.credentials = credentials
        if isinstance(credentials, PskCredentials):
            self.suites = (PSK_AES_128_CCM_8,)
            own_key = None
            self._trusted = None
        else:
            self.suites = (ECDHE_ECDSA_AES_128_CCM_8,)
            own_key = credentials.private_key
            self._trusted = public_key_xy(credentials.server_public_key)
        super().__init__(own_key)
        self._send, self._on_plaintext = send, on_plaintext
        self._on_connected, self._on_failed = on_connected, on_failed
        self._session = _session_for(remote)
        self._pointer = ctypes.addressof(self._session)
        self.connected = False
        self.failed: DtlsError | None = None

    def connect(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._lib.dtls_connect(self._ctx, self._pointer) < 0:
            self._failed(DtlsError("tinydtls could not start the handshake"))
        self._schedule_retransmit(loop)

    def datagram(self, data: bytes, loop: asyncio.AbstractEventLoop) -> None:
        if not self._ctx:
            return
        result = self._handle(self._pointer, data)
        if self.failed is None and not self._lib.dtls_get_peer(self._ctx, self._pointer):
            # tinydtls refused the handshake itself (it sent the alert, so no event says so)
            self._failed(DtlsError("handshake refused: " + ("the server's key is not the trusted one"
                                                          if result < 0 else "session closed")))
        elif not self.connected and self._ctx:
            self._schedule_retransmit(loop)

    def write(self, plaintext: bytes) -> bool:
        return bool(self._ctx) and self.connected and \
            self._lib.dtls_write(self._ctx, self._pointer, plaintext, len(plaintext)) >= 0

    def close(self) -> None:
        if self._ctx and self.connected:
            self._lib.dtls_close(self._ctx, self._pointer)
        self.connected = False
        self._free()

    def _failed(self, error: DtlsError) -> None:
        if self.failed is None:
            self.failed = error
            self.connected = False
            self._on_failed(error)

    def _write(self, session: int, record: bytes) -> int:
        self._send(record)
        return len(record)

    def _read(self, session: int, plaintext: bytes) -> None:
        self._on_plaintext(plaintext)

    def _event(self, session: int, level: int, code: int) -> None:
        if level == 0 and code == _EVENT_CONNECTED:
            self.connected = True
            self._on_connected()
        elif level == _ALERT_FATAL or code == _ALERT_CLOSE_NOTIFY:
            what = "closed by the server" if code == _ALERT_CLOSE_NOTIFY else f"fatal alert {code} from the server"
            self._failed(DtlsError(what if self.connected else f"handshake refused: {what}"))

    def _psk_info(self, session: int, kind: int, description: bytes) -> bytes | int:
        credentials = self.credentials
        if kind == _PSK_IDENTITY:
            return credentials.identity
        if kind == _PSK_KEY:
            return credentials.key if description == credentials.identity else _DECRYPT_ERROR
        return b""

    def _verify_key(self, session: int, xy: bytes) -> int:
        return 0 if xy == self._trusted else _BAD_CERTIFICATE


class DtlsClientTransport(asyncio.DatagramTransport):
    """What open_dtls_endpoint returns: sendto(plaintext) encrypts (and queues until the
    handshake finished); close() ends the session."""

    def __init__(self, loop, protocol, credentials, remote_addr, handshake_timeout_s: float) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._udp: asyncio.DatagramTransport | None = None
        self._queue: collections.deque[bytes] = collections.deque()
        self._closing = False
        self._remote = remote_addr
        self._credentials = credentials
        self._handshake_timeout_s = handshake_timeout_s
        self._timeout: asyncio.TimerHandle | None = None
        self.engine: DtlsClient | None = None
        self.handshake_s: float | None = None
        self._started = 0.0

    # called by the UDP protocol below
    def _start(self, udp: asyncio.DatagramTransport) -> None:
        self._udp = udp
        peer = udp.get_extra_info("peername") or self._remote
        self.engine = DtlsClient(self._credentials, peer, send=self._send_record,
                                 on_plaintext=self._plaintext, on_connected=self._connected,
                                 on_failed=self._failed)
        self._protocol.connection_made(self)
        self._started = time.perf_counter()
        self._timeout = self._loop.call_later(self._handshake_timeout_s, self._timed_out)
        self.engine.connect(self._loop)

    def _send_record(self, record: bytes) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(record)

    def _plaintext(self, data: bytes) -> None:
        self._protocol.datagram_received(data, self._remote)

    def _connected(self) -> None:
        self.handshake_s = time.perf_counter() - self._started
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None
        while self._queue and self.engine is not None and self.engine.connected:
            self.engine.write(self._queue.popleft())

    def _failed(self, error: DtlsError) -> None:
        self._queue.clear()
        self._loop.call_soon(self._lose, error)

    def _timed_out(self) -> None:
        self._timeout = None
        if self.engine is not None and not self.engine.connected:
            self.engine._failed(DtlsError("DTLS handshake timed out"))

    def _lose(self, error: DtlsError | None) -> None:
        if error is not None:
            self._protocol.error_received(error)
        self.close(_error=error)

    def _datagram(self, data: bytes) -> None:
        if self.engine is not None:
            self.engine.datagram(data, self._loop)

    # asyncio.DatagramTransport
    def sendto(self, data, addr=None) -> None:
        if self._closing:
            return
        engine = self.engine
        if engine is not None and engine.connected:
            engine.write(bytes(data))
        elif engine is None or engine.failed is None:
            self._queue.append(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self, *, _error: DtlsError | None = None) -> None:
        if self._closing:
            return
        self._closing = True
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None
        if self.engine is not None:
            self.engine.close()
        if self._udp is not None:
            self._udp.close()
        self._loop.call_soon(self._protocol.connection_lost, _error)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name, default=None):
        if name == "peername":
            return self._remote
        if name == "dtls_connected":
            return self.engine is not None and self.engine.connected
        return self._udp.get_extra_info(name, default) if self._udp is not None else default

    def get_write_buffer_size(self) -> int:
        return len(self._queue)


class _UdpForDtls(asyncio.DatagramProtocol):
    def __init__(self, transport: DtlsClientTransport) -> None:
        self.dtls = transport

    def connection_made(self, transport) -> None:
        self.dtls._start(transport)

    def datagram_received(self, data, addr) -> None:
        self.dtls._datagram(data)

    def error_received(self, exc) -> None:
        self.dtls._protocol.error_received(exc)


async def open_dtls_endpoint(loop, protocol_factory, remote_addr, credentials: PskCredentials | RpkCredentials,
                             local_addr=None, *, handshake_timeout_s: float = 30.0):
    """Like loop.create_datagram_endpoint(remote_addr=...), over DTLS: (transport, protocol).

    The protocol gets connection_made at once; sendto before the handshake finished queues.
    A failed handshake (or one not finished within handshake_timeout_s) reaches the protocol
    as error_received(DtlsError), then connection_lost(DtlsError)."""
    protocol = protocol_factory()
    dtls = DtlsClientTransport(loop, protocol, credentials, remote_addr, handshake_timeout_s)
    await loop.create_datagram_endpoint(lambda: _UdpForDtls(dtls), remote_addr=remote_addr, local_addr=local_addr)
    return dtls, protocol
