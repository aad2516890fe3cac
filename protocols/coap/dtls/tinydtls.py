"""The ctypes binding of tinydtls 0.8.6 (inside DTLSSocket==0.2.3) and the engine both ends share.

The struct layouts are those of that release's headers (session.h, dtls.h, crypto.h), for
POSIX sockets and LP64, asserted below; the library refuses to load against another tinydtls.
tinydtls decrypts in place and is not thread-safe: records are copied into a buffer of the
engine's, and every call and callback happens on the event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import socket
import struct

import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.coap.dtls.identity import public_key_xy

log = structlog.get_logger("fleet.coap.dtls")

TINYDTLS_VERSION = b"0.8.6"  # the one DTLSSocket 0.2.3 bundles: the layouts below are its

# alert.h, global.h, dtls.h
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
# dtls_user_parameters_t (crypto.h): dtls_cipher_t cipher_suites[DTLS_MAX_CIPHER_SUITES + 1 = 5]
# (enums: ints), then the bitfields force_extended_master_secret:1, force_renegotiation_info:1
# in one unsigned int (GCC on x86-64/aarch64: the first field is the lowest bit).
_USER_FLAGS_OFFSET = 20
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
            ("dtls_ticks", None, [ctypes.POINTER(ctypes.c_uint32)]),
            ("dtls_package_version", cp, [])):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    if lib.dtls_package_version() != TINYDTLS_VERSION:
        raise ImportError(f"protocols.coap.dtls is written against tinydtls {TINYDTLS_VERSION.decode()} "
                          f"(DTLSSocket 0.2.3), not {lib.dtls_package_version().decode()}: its struct layouts")
    lib.dtls_init()
    lib.dtls_set_log_level(0)  # tinydtls prints warnings to stderr; we count and log ourselves
    return lib


_lib = None


def _tinydtls():
    global _lib  # noqa: PLW0603 - the shared library is loaded once per process
    if _lib is None:
        _lib = _load()
    return _lib


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

    _depth = 0              # dtls_handle_message calls under way (a callback may start another)
    _free_deferred = False  # _free was asked for inside one: done when the outermost returns

    def _free(self) -> None:
        if self._retransmit_timer is not None:
            self._retransmit_timer.cancel()
            self._retransmit_timer = None
        if self._depth:
            # Closed from inside a callback (a device's datagram_received closing its
            # transport): tinydtls is still in dtls_handle_message on this context, so freeing
            # it now would pull the context from under it.
            self._free_deferred = True
            return
        if self._ctx:
            ctx, self._ctx = self._ctx, None
            self._lib.dtls_free_context(ctx)

    def _handle(self, session_address: int, data: bytes) -> int:
        n = len(data)
        if n > _MAX_DATAGRAM or not self._ctx:
            return -1
        if self._depth:
            # A callback handing tinydtls another datagram: that would overwrite the buffer
            # the record being handled is decrypted in.
            raise RuntimeError("a DTLS datagram handed to tinydtls from inside its callback")
        ctypes.memmove(self._in_address, data, n)
        self._depth += 1
        try:
            return self._lib.dtls_handle_message(self._ctx, session_address, self._in_address, n)
        finally:
            self._depth -= 1
            if self._free_deferred:
                self._free_deferred = False
                self._free()

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

    # Whether a handshake requires the peer to offer the extended master secret (RFC 7627) and
    # secure renegotiation (RFC 5746) extensions; tinydtls' default is yes for both.
    require_secure_extensions = True

    def _c_user_parameters(self, ctx, session, parameters):
        suites = self._handshake_suites()
        array = (ctypes.c_int * 5).from_address(parameters)
        for i in range(5):
            array[i] = suites[i] if i < len(suites) else 0
        flags = ctypes.c_uint.from_address(parameters + _USER_FLAGS_OFFSET)
        flags.value = (flags.value & ~0b11) | (0b11 if self.require_secure_extensions else 0)

    def _handshake_suites(self) -> tuple[int, ...]:
        """The suites tinydtls may use for the handshake under way."""
        return self.suites

    def _c_psk_info(self, ctx, session, kind, desc, desc_length, result, result_length):
        try:
            value = self._psk_info(session, kind, ctypes.string_at(desc, desc_length) if desc else b"")
        except Exception:  # noqa: BLE001
            log.exception("PSK lookup failed")
            return _INTERNAL_ERROR
        if isinstance(value, int):
            return value
        if len(value) > result_length:
            # tinydtls 0.8.6 takes PSK keys of 16 bytes and identities of 32 at most (crypto.h)
            log.warning("DTLS PSK value longer than tinydtls takes", kind=kind, size=len(value), limit=result_length)
            return _INTERNAL_ERROR
        ctypes.memmove(result, value, len(value))
        return len(value)

    def _c_get_key(self, ctx, session, result):
        if self._key is None:
            return -1
        try:
            self._server_hello()
        except Exception:  # noqa: BLE001 - returning 0 would leave tinydtls' key pointer unset
            log.exception("starting a DTLS handshake failed")
            return _INTERNAL_ERROR
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
