"""The common confirmable POST answered beside aiocoap, with RFC 7252's message layer kept intact.

A device's Send is one CON POST with Uri-Path and Content-Format and nothing else. aiocoap
spends most of its time per such request on generality (a Message with full options, two
timers, a Pipe, a Task, a Site lookup, the response Message): several times what storing the
points costs. When the root resource offers ``fast_post(path, content_format, payload, peer)``
this module answers those requests itself and hands everything else to aiocoap unchanged.
The peer is (host, port, secure), `secure` for the coaps listener's interface.

What is kept, per RFC 7252:
- Deduplication (§4.5): (peer, message id) is remembered for EXCHANGE_LIFETIME; a duplicate
  gets the stored answer again, or nothing while the first is still being processed.
- Piggybacked response (§5.2.1) once the resource's future resolves; after EMPTY_ACK_DELAY an
  empty ACK instead, and the response follows as a separate CON, which aiocoap's message
  manager sends and retransmits (§5.2.2).
- The reply leaves from the address the request came to (IPV6_PKTINFO, as aiocoap does).

Anything else (NON, other methods or options, block-wise, malformed, multicast, a resource
that declines) goes through aiocoap; a declined request's duplicates follow it there, so each
exchange is deduplicated by exactly one of the two.

A confirmable GET of a firmware block (Uri-Path, Block2 and Size2, nothing else) is answered
here too when the root resource offers ``fast_get``: piggybacked at once when the block is in
memory, else like a Send once it has been looked up (empty ACK and separate response if that
takes long). Those answers are not kept for deduplication: a GET is idempotent (§4.5 allows
processing a duplicate again), and keeping ~1 KB per block for EXCHANGE_LIFETIME would make
memory grow with the block rate. A duplicate gets the same bytes again from the caches.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import socket

import structlog
from aiocoap.message import Direction, Message
from aiocoap.numbers.types import Type
from aiocoap.numbers.constants import TransportTuning
from aiocoap.transports.udp6 import UDP6EndpointAddress

from fleet.db.availability import database_away
from fleet.errors import NotFound, Unavailable, ValidationFailed
from fleet.metrics import coap_answered
from protocols.coap import message

log = structlog.get_logger("fleet.coap")

_CON_V1 = 0x40  # version 1, type CON, in the first byte's high nibble
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
# Max-Age of a 5.03 while the database is away (protocols.lwm2m.server.BACKOFF_S).
DATABASE_BACKOFF_S = 10
# Stands for "aiocoap has this exchange": its duplicates must reach aiocoap's own dedup.
_DELEGATED = object()


def parse_post(data: bytes) -> tuple[tuple[bytes, ...], int | None, bytes] | None:
    """(uri-path segments, content-format, payload) of a POST carrying no other option.

    None for anything else, malformed datagrams included: aiocoap's path answers those.
    """
    try:
        _, _, _, _, options, payload = message.parse(data)
    except message.MessageFormatError:
        return None
    path: list[bytes] = []
    content_format = None
    for number, value in options:
        if number == message.URI_PATH:
            path.append(value)
        elif number == message.CONTENT_FORMAT and content_format is None and len(value) <= 2:
            content_format = int.from_bytes(value, "big")
        else:
            return None
    return tuple(path), content_format, payload


def _refusal(exc: BaseException) -> tuple[int, int | None, bytes]:
    """(code, Max-Age, diagnostic) for a request that failed: the database being away is a
    5.03 the device backs off from, a value it refused is the device's 4.00, what it asked
    for and is not there a 4.04; anything else is our fault, and whoever raised it logged it."""
    if isinstance(exc, Unavailable):
        return message.SERVICE_UNAVAILABLE, exc.retry_after_s, b"database unavailable; retry later"
    if isinstance(exc, ValidationFailed | NotFound):
        code = message.BAD_REQUEST if isinstance(exc, ValidationFailed) else message.NOT_FOUND
        return code, None, exc.detail.encode()[:200].decode("utf-8", "ignore").encode()
    if database_away(exc):
        return message.SERVICE_UNAVAILABLE, DATABASE_BACKOFF_S, b"database unavailable; retry later"
    return message.INTERNAL_SERVER_ERROR, None, b""


class _Exchange:
    __slots__ = ("key", "address", "ancdata", "pktinfo", "mid", "token", "empty_acked")

    def __init__(self, key, address, ancdata, pktinfo, mid: int, token: bytes) -> None:
        self.key = key
        self.address = address
        self.ancdata = ancdata
        self.pktinfo = pktinfo
        self.mid = mid
        self.token = token
        self.empty_acked = False


class FastPath:
    """The fast-path state of one udp6 interface: its dedup table and the pending exchanges."""

    def __init__(self, interface, resource, tuning: TransportTuning) -> None:
        self.interface = interface
        # Behind the coaps listener's DTLS (protocols.coap.secure): peers are (host, port, True),
        # never the plain socket's (host, port, False) from the same address.
        self.secure = bool(interface.__dict__.get("_fleet_secure", False))
        self.fast_post = resource.fast_post
        self.fast_get = getattr(resource, "fast_get", None)
        self.loop = asyncio.get_running_loop()
        self.lifetime = tuning.EXCHANGE_LIFETIME
        self.empty_ack_delay = tuning.EMPTY_ACK_DELAY
        self.tuning = tuning
        # (host, port, message id) -> answer bytes, a pending _Exchange, or _DELEGATED; on the
        # coaps interface the key also holds who the session at that address authenticated as
        # (DtlsServer.who): another device's session on that address later is another peer.
        self.recent: dict[tuple, object] = {}
        self._dtls = interface.__dict__.get("_fleet_dtls")
        self._expiry: collections.deque[tuple[float, tuple[str, int, int]]] = collections.deque()
        self._awaiting_ack: collections.deque[tuple[float, _Exchange]] = collections.deque()
        self._ack_timer: asyncio.TimerHandle | None = None
        self.answered = 0
        self.delegated = 0
        self.duplicates = 0
        self.separate = 0
        self.blocks = 0

    def offer_download(self, data: bytes, pktinfo: bytes | None, address, peer_limit=None) -> bool:
        """Answer a CON GET of a firmware block; True if taken.

        Checked before the peer limit, which only the blocks served from memory skip: they
        belong to a token this node knows to be valid (a device downloading its own package),
        and a download is a burst of hundreds of requests the per-peer rate would refuse.
        A block not in memory yet is taken only if the peer limit lets it in (`fast_get` gives
        a callable that starts the lookup and returns its future), and answered once it is."""
        if (self.fast_get is None or len(data) < 4 or data[1] != message.GET
                or data[0] & 0xF0 != _CON_V1 or data[0] & 0x0F > message.MAX_TOKEN_LENGTH):
            return False
        if pktinfo is not None and (pktinfo[0] == 0xFF or (pktinfo[:12] == _V4_MAPPED and 224 <= pktinfo[12] < 240)):
            return False
        key = self._key(data, address)
        if self.recent.get(key) is not None:
            return False  # a duplicate: offer() or aiocoap, whoever has the exchange, answers it
        try:
            _, _, mid, token, options, _ = message.parse(data)
        except message.MessageFormatError:
            return False
        path: list[bytes] = []
        block2 = None
        size2_asked = False
        for number, value in options:
            if number == message.URI_PATH:
                path.append(value)
            elif number == message.BLOCK2 and block2 is None:
                block2 = value
            elif number == message.SIZE2:
                size2_asked = True
            else:
                return False
        try:
            answer = self.fast_get(tuple(path), block2, size2_asked)
        except Exception:  # noqa: BLE001 - our bug; aiocoap's path answers and logs it again
            log.exception("fast path failed; handing the request to aiocoap")
            answer = None
        if answer is None:
            return False
        if callable(answer):
            # Not in memory yet: looked up if the peer limit lets it in, and answered (and
            # deduplicated) like a Send once it is.
            now = self.loop.time()
            if peer_limit is not None and (refused := peer_limit.refuse(data, address, now)) is not False:
                if refused is not None:
                    self._send(refused, [], address)
                return True
            answer = answer()
            if self._expiry and self._expiry[0][0] <= now:
                self._expire(now)
            self._expiry.append((now + self.lifetime, key))
            self._take(key, address, pktinfo, token, answer, self._answer_get, now)
            return True
        options_bytes, payload = answer
        self.blocks += 1
        coap_answered(message.GET, message.CONTENT)
        self._send(message.encode_with_options(message.ACK, message.CONTENT, mid, token, options_bytes, payload),
                   self._ancdata(pktinfo), address)
        return True

    def offer(self, data: bytes, pktinfo: bytes | None, address) -> bool:
        """Handle the datagram if it is a fast-path request or a duplicate of one; True if so."""
        if len(data) < 4 or data[0] & 0xF0 != _CON_V1 or data[0] & 0x0F > message.MAX_TOKEN_LENGTH \
                or not 1 <= data[1] < 32:
            return False  # not a CON request, or a format error that aiocoap's path answers
        if pktinfo is not None and (pktinfo[0] == 0xFF or (pktinfo[:12] == _V4_MAPPED and 224 <= pktinfo[12] < 240)):
            return False  # sent to a multicast group: aiocoap knows how to (not) answer those
        now = self.loop.time()
        expiry = self._expiry
        if expiry and expiry[0][0] <= now:
            self._expire(now)
        key = self._key(data, address)
        known = self.recent.get(key)
        if known is not None:
            if known is _DELEGATED:
                return False
            self.duplicates += 1
            if type(known) is bytes:
                self._send(known, self._ancdata(pktinfo), address)
            return True  # still being processed: the answer will come
        if data[1] != message.POST:
            return False
        parsed = parse_post(data)
        if parsed is None:
            return False
        path, content_format, payload = parsed
        host = address[0]
        peer = (host[7:] if host.startswith("::ffff:") else host, address[1], self.secure)
        try:
            future = self.fast_post(path, content_format, payload, peer)
        except Exception:  # noqa: BLE001 - our bug; aiocoap's path answers and logs it again
            log.exception("fast path failed; handing the request to aiocoap")
            future = None
        expiry.append((now + self.lifetime, key))
        if future is None:
            self.recent[key] = _DELEGATED
            self.delegated += 1
            return False
        self._take(key, address, pktinfo, data[4:4 + (data[0] & 0x0F)], future, self._answer, now)
        return True

    def _take(self, key, address, pktinfo: bytes | None, token: bytes, future: asyncio.Future,
              answer, now: float) -> None:
        """An exchange answered once `future` resolves, by `answer(exchange, future)`; an empty
        ACK goes out if that takes longer than EMPTY_ACK_DELAY."""
        exchange = _Exchange(key, address, self._ancdata(pktinfo), pktinfo, key[2], token)
        self.recent[key] = exchange
        self._awaiting_ack.append((now + self.empty_ack_delay, exchange))
        if self._ack_timer is None:
            self._ack_timer = self.loop.call_at(now + self.empty_ack_delay, self._empty_acks)
        future.add_done_callback(functools.partial(answer, exchange))

    def has_seen(self, data: bytes, address) -> bool:
        """Whether this datagram repeats a message ID from this peer still in the dedup cache."""
        return len(data) >= 4 and self._key(data, address) in self.recent

    def _key(self, data: bytes, address) -> tuple:
        mid = (data[2] << 8) | data[3]
        if self._dtls is None:
            return address[0], address[1], mid
        return address[0], address[1], mid, self._dtls.who(address)

    @staticmethod
    def _ancdata(pktinfo: bytes | None) -> list:
        return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo)] if pktinfo is not None else []

    def _send(self, datagram: bytes, ancdata: list, address) -> None:
        if self.interface._shutting_down is None:
            self.interface.transport.sendmsg(datagram, ancdata, 0, address)

    def _answer(self, exchange: _Exchange, done: asyncio.Future) -> None:
        code, max_age, diagnostic = message.CHANGED, None, b""
        if done.cancelled():
            code = message.INTERNAL_SERVER_ERROR
        elif (exc := done.exception()) is not None:
            code, max_age, diagnostic = _refusal(exc)
        options = message.encode_options([(message.MAX_AGE, message.uint(max_age))]) if max_age is not None else b""
        coap_answered(message.POST, code)
        self._reply(exchange, code, options, diagnostic)

    def _answer_get(self, exchange: _Exchange, done: asyncio.Future) -> None:
        if done.cancelled():
            code, options, payload = message.SERVICE_UNAVAILABLE, b"", b""
        elif (exc := done.exception()) is not None:
            code, max_age, payload = _refusal(exc)
            if code == message.INTERNAL_SERVER_ERROR:
                log.error("serving a firmware block failed", exc_info=exc)
            options = message.encode_options([(message.MAX_AGE, message.uint(max_age))]) if max_age else b""
        else:
            code, (options, payload) = message.CONTENT, done.result()
        # Not kept for duplicates (a GET is idempotent): a repeated request is answered anew,
        # from memory now.
        coap_answered(message.GET, code)
        self._reply(exchange, code, options, payload, keep=False)

    def _reply(self, exchange: _Exchange, code: int, options: bytes, payload, *, keep: bool = True) -> None:
        self.answered += 1
        if self._dtls is not None and self._dtls.who(exchange.address) != exchange.key[3]:
            return  # its DTLS session ended meanwhile: the answer is not for whoever holds the address now
        reply = message.encode_with_options(message.ACK, code, exchange.mid, exchange.token, options, payload)
        if not keep:
            current = self.recent.get(exchange.key)
            if current is exchange or (exchange.empty_acked and type(current) is bytes):
                del self.recent[exchange.key]  # this exchange's entry (or its empty ACK), no other
        if not exchange.empty_acked:
            if keep and self.recent.get(exchange.key) is exchange:
                self.recent[exchange.key] = reply
            self._send(reply, exchange.ancdata, exchange.address)
            return
        # The empty ACK went out already: the answer is a separate CON, retransmitted by aiocoap.
        self.separate += 1
        if self.interface._shutting_down is not None:
            return
        remote_type = getattr(self.interface, "_fleet_remote_type", UDP6EndpointAddress)  # coaps: its own
        remote = remote_type(exchange.address, self.interface, pktinfo=exchange.pktinfo)
        response = Message.decode(reply, remote)
        response.mtype, response.mid, response.transport_tuning = Type.CON, None, self.tuning
        response.direction = Direction.OUTGOING
        self.interface._ctx.send_message(response, lambda: None)

    def _empty_acks(self) -> None:
        now = self.loop.time()
        waiting = self._awaiting_ack
        while waiting and waiting[0][0] <= now:
            _, exchange = waiting.popleft()
            if self.recent.get(exchange.key) is exchange:
                exchange.empty_acked = True
                empty_ack = message.empty(message.ACK, exchange.mid)
                self.recent[exchange.key] = empty_ack  # what a duplicate gets from now on
                self._send(empty_ack, exchange.ancdata, exchange.address)
        self._ack_timer = self.loop.call_at(waiting[0][0], self._empty_acks) if waiting else None

    def _expire(self, now: float) -> None:
        expiry, recent = self._expiry, self.recent
        while expiry and expiry[0][0] <= now:
            _, key = expiry.popleft()
            recent.pop(key, None)
