"""The server engine of a coaps socket: one tinydtls context, a session per peer address."""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.coap.dtls.identity import DeviceKeys, PeerIdentity
from protocols.coap.dtls.tinydtls import (
    _ALERT_CLOSE_NOTIFY, _ALERT_FATAL, _BAD_CERTIFICATE, _CLIENT_HELLO, _CONTENT_APPLICATION, _CONTENT_CCS,
    _CONTENT_HANDSHAKE, _DECRYPT_ERROR, _EVENT_CONNECTED, _HANDSHAKE_HEADER, _INTERNAL_ERROR, _PSK_HINT, _PSK_KEY,
    _RECORD_HEADER, ECDHE_ECDSA_AES_128_CCM_8, PSK_AES_128_CCM_8, _Engine, _Session, _session_for)

log = structlog.get_logger("fleet.coap.dtls")


def _records(data: bytes):
    """(content type, epoch, offset of the fragment) of each DTLS record in a datagram."""
    offset = 0
    while offset + _RECORD_HEADER <= len(data):
        length = (data[offset + 11] << 8) | data[offset + 12]
        yield data[offset], (data[offset + 3] << 8) | data[offset + 4], offset + _RECORD_HEADER
        offset += _RECORD_HEADER + length


_CERTIFICATE, _CLIENT_KEY_EXCHANGE = 11, 16
# dtls_peer_t (peer.h, hashed peers): UT_hash_handle (56 bytes on LP64), session_t (144), role,
# state (dtls_state_t, state.h: DTLS_STATE_WAIT_FINISHED = 6)
_PEER_SESSION_OFFSET, _PEER_STATE_OFFSET, _STATE_WAIT_FINISHED = 56, 56 + 144 + 4, 6


def _offered_credential(data: bytes, fragment: int, mode: str) -> tuple[str, bytes] | None:
    """("psk", identity) of a PSK ClientKeyExchange, or ("rpk", x||y) of a raw-public-key
    Certificate (its SubjectPublicKeyInfo ends with the uncompressed point 04||x||y), in the
    handshake record whose fragment starts at `fragment`; None for anything else."""
    body = fragment + _HANDSHAKE_HEADER
    if body > len(data):
        return None
    if mode == "psk" and data[fragment] == _CLIENT_KEY_EXCHANGE and body + 2 <= len(data):
        length = (data[body] << 8) | data[body + 1]
        identity = data[body + 2:body + 2 + length]
        return ("psk", identity) if len(identity) == length else None
    if mode == "rpk" and data[fragment] == _CERTIFICATE and body + 3 <= len(data):
        length = int.from_bytes(data[body:body + 3], "big")  # RFC 7250 §3: one SPKI, no list
        certificate = data[body + 3:body + 3 + length]
        if len(certificate) == length >= 65 and certificate[-65] == 0x04:
            return "rpk", certificate[-64:]
    return None


_CLIENT_CERTIFICATE_TYPE, _SERVER_CERTIFICATE_TYPE, _RAW_PUBLIC_KEY = 19, 20, 2  # RFC 7250


def _waits_for_finished(tinydtls_peer: int, session: int) -> bool:
    """Whether tinydtls' peer (a dtls_peer_t *) is in DTLS_STATE_WAIT_FINISHED: it took the
    device's key exchange and ChangeCipherSpec. True if the struct does not hold the session
    where peer.h says: then the records alone decide, as they did before."""
    if ctypes.string_at(tinydtls_peer + _PEER_SESSION_OFFSET, 36) != ctypes.string_at(session, 36):
        return True
    return ctypes.c_int.from_address(tinydtls_peer + _PEER_STATE_OFFSET).value == _STATE_WAIT_FINISHED


def _client_hello(data: bytes) -> tuple[bool, tuple[int, ...], bool] | None:
    """(has a cookie, offered cipher suites, offers raw public keys both ways) of a datagram
    starting with a ClientHello, else None."""
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
    return cookie_length > 0, suites, _offers_raw_public_keys(data, suites_end)


def _offers_raw_public_keys(data: bytes, at: int) -> bool:
    """Whether the extensions after the suites (from `at`: compression methods, then extensions)
    carry RFC 7250's client and server certificate types, both listing RawPublicKey."""
    if at >= len(data):
        return False
    at += 1 + data[at]  # compression methods
    if at + 2 > len(data):
        return False
    end = min(len(data), at + 2 + ((data[at] << 8) | data[at + 1]))
    at += 2
    found = set()
    while at + 4 <= end:
        kind, length = (data[at] << 8) | data[at + 1], (data[at + 2] << 8) | data[at + 3]
        body = data[at + 4:at + 4 + length]
        if kind in (_CLIENT_CERTIFICATE_TYPE, _SERVER_CERTIFICATE_TYPE) and body and _RAW_PUBLIC_KEY in body[1:1 + body[0]]:
            found.add(kind)
        at += 4 + length
    return len(found) == 2


def _v4_mapped(address) -> tuple:
    """An IPv4 address as a dual-stack socket names it: the fast path hands peers over as
    ('1.2.3.4', port), the coaps socket's addresses are ('::ffff:1.2.3.4', port, 0, 0)."""
    return ("::ffff:" + address[0], address[1])


def _never(mode: str, identity: bytes) -> bool:
    return False


class _Peer:
    """One peer address: its tinydtls session (kept, so no struct is built per datagram) and
    what we know of its handshake."""
    __slots__ = ("address", "session", "pointer", "seen", "since", "mode", "pending", "identity",
                 "ccs_seen", "ancdata", "deferred", "waiting", "final_flight", "repeats")

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
        self.deferred = False  # a flight with an unknown credential was held back once
        self.waiting = False   # for that flight's retransmission: the rest of it is dropped
        self.final_flight: tuple[bytes, ...] | None = None  # our ChangeCipherSpec + Finished, until it is heard
        self.repeats = 0


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

    # Devices that offer neither the extended master secret nor renegotiation_info (older
    # Californium, stripped-down mbedTLS builds) are served: both are negotiated whenever a
    # client offers them (every stack we checked does), and the attacks they guard against need
    # renegotiation or resumption, which this server never does.
    require_secure_extensions = False

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
        self.handshakes_deferred = 0
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
            # An established session's application data: the hot path. The peer counts as seen
            # (and answers leave from the local address it wrote to) once a record of it
            # decrypts (_read): anyone can send a datagram from its address.
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
            mode = self._mode_of(hello[1], hello[2])
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
            if peer.identity is None:  # a session's own records are seen in _read, once they decrypt
                peer.seen, peer.ancdata = now, self.ancdata
            if peer.final_flight is not None and self._repeated_final_flight(peer, data):
                return
            finished = False
            ccs = peer.ccs_seen
            offered = None
            for content_type, epoch, fragment in _records(data):
                if content_type == _CONTENT_CCS:
                    ccs = True
                elif content_type == _CONTENT_HANDSHAKE and epoch and ccs:
                    finished = True
                elif content_type == _CONTENT_HANDSHAKE and not epoch and peer.identity is None:
                    offered = offered or _offered_credential(data, fragment, peer.mode)
            if peer.identity is None and self._defer(peer, offered):
                return
            peer.ccs_seen = ccs
            handshaking = peer.identity is None
            if handshaking:
                self._capturing, self._captured = peer, []
            try:
                result = self._handle(peer.pointer, data)
            finally:
                self._capturing = None
            if handshaking and peer.identity is not None:
                peer.final_flight = tuple(self._captured)
            if self._peers.get(key) is not peer:
                pass  # closed by an alert while handling it
            elif not (state := self._lib.dtls_get_peer(self._ctx, peer.pointer)):
                self._fail(key, peer, "handshake refused" if result < 0 else "closed")
            elif peer.identity is None and finished and _waits_for_finished(state, peer.pointer):
                # The Finished after ChangeCipherSpec did not decrypt: the device holds another
                # key for that identity. tinydtls drops such a record silently; we close. (Not
                # when tinydtls is still before the ChangeCipherSpec: the device's key exchange
                # was lost, tinydtls ignored its ChangeCipherSpec, and its repeated flight will do.)
                self._reset(peer)
                self._fail(key, peer, "wrong key")
        self._schedule_retransmit(self.loop)

    _capturing: _Peer | None = None  # whose records `_write` keeps in `_captured`
    _captured: list[bytes] = []
    _MAX_REPEATS = 8

    def _repeated_final_flight(self, peer: _Peer, data: bytes) -> bool:
        """Whether `data` is part of the device's final flight again (ClientKeyExchange, its
        Certificate and CertificateVerify, ChangeCipherSpec, Finished) after its handshake
        completed here: our ChangeCipherSpec and Finished were lost, and RFC 6347 §4.2.4 says to
        send them again. tinydtls 0.8.6 does not (the device would time out and start over on
        any loss of that last flight), so the records it wrote are kept and sent again, once per
        repeated Finished, until the device's first record under the new keys shows it has them."""
        repeated = False
        for content_type, epoch, fragment in _records(data):
            if content_type == _CONTENT_HANDSHAKE and not epoch and data[fragment] == _CLIENT_HELLO:
                return False  # a new handshake, not a repetition
            if content_type == _CONTENT_HANDSHAKE and epoch:
                repeated = True  # its Finished: the last record of the flight
            elif content_type not in (_CONTENT_HANDSHAKE, _CONTENT_CCS):
                return False
        if repeated and peer.repeats < self._MAX_REPEATS:
            peer.repeats += 1
            for record in peer.final_flight:
                self._send_record(record, peer.address, peer.ancdata)
        return True

    def _stateless(self, address, data: bytes) -> None:
        if self._scratch_address != address[:2]:
            self._scratch = _session_for(address)
            self._scratch_address = address[:2]
        self._stateless_address = address
        try:
            self._handle(ctypes.addressof(self._scratch), data)
        finally:
            self._stateless_address = None

    def _mode_of(self, offered: tuple[int, ...], raw_public_keys: bool) -> str:
        """The suite this handshake gets (tinydtls is told, `_handshake_suites`): the client's
        first that we accept, the ECDHE_ECDSA one only from a client that offers raw public keys
        (RFC 7250 certificate types). Stacks like mbedTLS offer TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
        before TLS_PSK_WITH_AES_128_CCM_8 whatever credential they hold; tinydtls alone would pick
        the first and fail the handshake for want of those extensions."""
        for suite in offered:
            if suite == PSK_AES_128_CCM_8 and suite in self.suites:
                return "psk"
            if suite == ECDHE_ECDSA_AES_128_CCM_8 and suite in self.suites and raw_public_keys:
                return "rpk"
        return "psk"

    def _handshake_suites(self) -> tuple[int, ...]:
        if self._hello is not None:
            return (ECDHE_ECDSA_AES_128_CCM_8,) if self._hello[1] == "rpk" else (PSK_AES_128_CCM_8,)
        return self.suites

    def _defer(self, peer: _Peer, offered: tuple[str, bytes] | None) -> bool:
        """Whether to hold back this datagram of a handshake: the credential it offers (PSK
        identity, raw public key) is not known yet. The directory may be fetching it (a miss
        starts that), so the flight is dropped once (the rest of it too) rather than refused,
        and the device's retransmission ~2 s later finds it; a miss again is refused, unless
        that fetch is still under way (a busy database: the next retransmission tries again,
        within the handshake timeout)."""
        if offered is None:
            if peer.waiting:
                self.records_dropped += 1
            return peer.waiting
        peer.waiting = False
        mode, identity = offered
        if peer.deferred and not getattr(self.keys, "looking_up", _never)(mode, identity):
            return False
        known = self.keys.psk(identity) if mode == "psk" else self.keys.rpk(identity)
        if known is not None:
            return False
        peer.deferred = peer.waiting = True
        self.handshakes_deferred += 1
        return True

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
        peer.deferred = peer.waiting = False
        peer.final_flight, peer.repeats = None, 0
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
        if peer is not None and peer is self._capturing:
            self._captured.append(record)
        self._send_record(record, address, ancdata)
        return len(record)

    def _send_record(self, record: bytes, address, ancdata) -> None:
        self.records_out += 1
        if self._sendmsg is not None:
            self._sendmsg(record, ancdata, 0, address)
        else:
            self.transport.sendto(record, address)

    _stateless_address = None
    _sendmsg = None
    ancdata = ()  # of the datagram being handled

    def _read(self, session: int, plaintext: bytes) -> None:
        peer = self._current or self._peer_of(session)
        if peer is None or peer.identity is None:
            self.records_dropped += 1
            return
        self.records_in += 1
        peer.seen, peer.ancdata = self.loop.time(), self.ancdata
        peer.final_flight = None  # it sends under the new keys: it has our Finished
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
    def send(self, plaintext: bytes, address, expected: tuple[str, bytes] | None = None) -> bool:
        """Encrypt and send one datagram to a peer; False if there is no session with it, or
        (`expected`: the (mode, identity) it was meant for) if the session at that address is
        another peer's: addresses change hands (a NAT gives a quiet device's port to another)."""
        peer = self._peers.get(address[:2])
        if peer is None or peer.identity is None or not self._ctx:
            return False
        if expected is not None and (peer.identity.mode, peer.identity.identity) != expected:
            return False
        return self._on_behalf_of(peer, self._lib.dtls_write, peer.pointer, plaintext, len(plaintext)) >= 0

    def who(self, address) -> tuple[str, bytes] | None:
        """(mode, identity) of the session at this address: what `send(expected=)` compares."""
        peer = self._peer_at(address)
        identity = peer.identity if peer is not None else None
        return (identity.mode, identity.identity) if identity is not None else None

    def identity_of(self, address) -> PeerIdentity | None:
        """Who the peer at this address proved to be; None without a finished handshake. The
        address as the socket gives it ('::ffff:1.2.3.4', port, ...) or as the fast path
        names a peer ('1.2.3.4', port)."""
        peer = self._peer_at(address)
        return peer.identity if peer is not None else None

    def _peer_at(self, address) -> _Peer | None:
        peer = self._peers.get(address[:2])
        if peer is None and ":" not in address[0]:
            peer = self._peers.get(_v4_mapped(address))
        return peer

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
