"""Confirmable requests to devices sent and matched beside aiocoap, with RFC 7252's message layer.

A dimming push is thousands of one-option PUTs, each answered by an ACK. aiocoap spends about a
millisecond of CPU per such request (a Message with full options, a Pipe, a Request object,
two timers, its token and message managers); this module sends the datagram itself and
matches the answer by message ID and token, at a small fraction of that. It shares the
listener's socket, draws tokens from aiocoap's counter and gives aiocoap its message IDs, so
a device sees one peer.

What is kept, per RFC 7252:
- Message IDs counted per device, for aiocoap's messages on the socket too, so none comes
  back to a device within EXCHANGE_LIFETIME (§4.4); tokens from aiocoap's counter.
- Retransmission of the CON with exponential back-off from ACK_TIMEOUT × a random factor,
  up to MAX_RETRANSMIT times (§4.2); then the request fails as unanswered.
- Piggybacked responses (§5.2.1) and separate ones (§5.2.2): an empty ACK stops the
  retransmissions, the response follows as a CON (which we acknowledge, also when it is
  repeated) or a NON, and must come within MAX_TRANSMIT_WAIT.
- A Reset fails the request at once, as does an ICMP error for the device's address.

Only answers to requests sent here are taken; everything else goes on to aiocoap. A response
that is block-wise (Block2) is reported as such so that the caller can ask through aiocoap.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import random
from dataclasses import dataclass

import structlog
from aiocoap.numbers.constants import TransportTuning

from protocols.coap import message

log = structlog.get_logger("fleet.coap")

_CON, _ACK, _RST, _EMPTY = message.CON, message.ACK, message.RST, message.EMPTY


MAX_PEERS = 1_000_000  # message-ID counters kept, about 100 bytes each


class RequestFailed(Exception):
    """No usable answer: timed out, reset, unreachable, or the listener is closing."""


@dataclass(frozen=True, slots=True)
class Answer:
    code: int  # the raw code byte, e.g. 0x44 for 2.04
    content_format: int | None
    payload: bytes
    blockwise: bool  # the payload is only the first block of a larger one

    @property
    def successful(self) -> bool:
        return self.code >> 5 == 2


def encode_request(mid: int, token: bytes, code: int, path: tuple[str, ...], *,
                   content_format: int | None = None, accept: int | None = None,
                   payload: bytes = b"") -> bytes:
    """A CON request with Uri-Path, Content-Format and Accept: all a device request needs."""
    options = [(message.URI_PATH, segment.encode()) for segment in path]
    if content_format is not None:
        options.append((message.CONTENT_FORMAT, message.uint(content_format)))
    if accept is not None:
        options.append((message.ACCEPT, message.uint(accept)))
    return message.encode_with_options(message.CON, code, mid, token, message.encode_options(options), payload)


def decode_answer(data: bytes) -> Answer | None:
    """Code, Content-Format, payload and Block2 presence of a response; None if malformed."""
    try:
        _, code, _, _, options, payload = message.parse(data)
    except message.MessageFormatError:
        return None
    content_format = None
    blockwise = False
    for number, value in options:
        if number == message.CONTENT_FORMAT:
            content_format = int.from_bytes(value, "big")
        elif number == message.BLOCK2:
            blockwise = True
    return Answer(code, content_format, payload, blockwise)


_CHANGED_HANDS = "the device's DTLS session ended; another peer holds its address now"


class _Request:
    __slots__ = ("peer", "mid", "token", "datagram", "future", "due", "timeout", "retransmits",
                 "acknowledged", "done", "who")

    def __init__(self, peer, mid: int, token: bytes, datagram: bytes, future: asyncio.Future) -> None:
        self.peer = peer
        self.mid = mid
        self.token = token
        self.datagram = datagram
        self.future = future
        self.due = 0.0  # when to retransmit, or give up; its entry in the deadline heap
        self.timeout = 0.0
        self.retransmits = 0
        self.acknowledged = False
        self.done = False
        self.who = None  # coaps: (mode, identity) of the session it was sent in


class OutboundRequests:
    """Requests from one udp6 interface: the pending ones by message ID and by token."""

    def __init__(self, interface, tuning: TransportTuning) -> None:
        self.interface = interface
        self.manager = interface._ctx  # aiocoap's MessageManager: its token counter we share
        self.loop = asyncio.get_running_loop()
        self.tuning = tuning
        # (host, port, mid) of a CON or NON sent and not yet acknowledged, reset or answered
        self.by_mid: dict[tuple[str, int, int], _Request] = {}
        # (host, port, token) of every request without its response yet
        self.by_token: dict[tuple[str, int, bytes], _Request] = {}
        # (host, port) -> requests in flight to that address, for ICMP errors
        self.by_peer: dict[tuple[str, int], list[_Request]] = {}
        # (host, port, mid) of separate CON responses taken, so a repeated one is acknowledged again
        self.answered: dict[tuple[str, int, int], None] = {}
        self._answered_expiry: collections.deque[tuple[float, tuple[str, int, int]]] = collections.deque()
        # Deadlines of all requests in one heap under one loop timer: thousands of requests in
        # flight would otherwise cost a TimerHandle each, created and cancelled per exchange.
        # Entries of finished requests, or of a superseded deadline, are skipped when they surface.
        self._deadlines: list[tuple[float, int, _Request]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        # Message IDs per device: one counter for all would come round to the same device within
        # EXCHANGE_LIFETIME once a node sends 65,536 messages in 247 s (a few city-wide pushes),
        # and the device would answer from its duplicate cache without acting (RFC 7252 §4.4).
        self._next_mid: dict[tuple[str, int], int] = {}
        self.sent = 0
        self.retransmitted = 0
        self.empty_acked = 0
        self.failed = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.closed = False
        # The coaps listener's DTLS server: requests are bound to the peer authenticated at
        # their address when sent, and answered only by it (the address may change hands).
        self._dtls = interface.__dict__.get("_fleet_dtls")

    @property
    def pending(self) -> int:
        return len(self.by_token)

    def request(self, address: tuple, code: int, path: tuple[str, ...], *,
                content_format: int | None = None, accept: int | None = None,
                payload: bytes = b"") -> asyncio.Future:
        """Send a CON request to `address` (a udp6 sockaddr); the future resolves to an Answer."""
        future = self.loop.create_future()
        if self.closed or self.interface._shutting_down is not None:
            future.set_exception(RequestFailed("the CoAP listener is closing"))
            return future
        peer = (address[0], address[1])
        mid = self.next_mid(address)
        token = self.manager.token_manager.next_token()
        datagram = encode_request(mid, token, code, path, content_format=content_format,
                                  accept=accept, payload=payload)
        request = _Request(address, mid, token, datagram, future)
        if self._dtls is not None:
            request.who = self._dtls.who(address)
        # A caller that gives up (a cancelled wait) ends the exchange: no more retransmissions.
        future.add_done_callback(lambda done: done.cancelled() and self._finish(request, None))
        self.by_mid[(peer[0], peer[1], mid)] = request
        self.by_token[(peer[0], peer[1], token)] = request
        self.by_peer.setdefault(peer, []).append(request)
        request.timeout = self.tuning.ACK_TIMEOUT * random.uniform(1.0, self.tuning.ACK_RANDOM_FACTOR)
        self._due(request, request.timeout)
        self.sent += 1
        self._send(datagram, address)
        return future

    def next_mid(self, address) -> int:
        """The next message ID for a device (a sockaddr), for our requests and aiocoap's alike
        (`protocols.coap.transport` routes aiocoap's through here): one counter per device."""
        peer = (address[0], address[1])
        mid = self._next_mid.get(peer)
        if mid is None:
            if len(self._next_mid) >= MAX_PEERS:
                self._next_mid.clear()  # addresses long gone (NAT rebinding): start afresh
            mid = random.randrange(0x10000)
        self._next_mid[peer] = (mid + 1) & 0xFFFF
        return mid

    def offer(self, data: bytes, address) -> bool:
        """Take the datagram if it answers one of our requests; True if taken."""
        if not self.by_token and not self.answered:
            return False
        if len(data) < 4 or data[0] >> 6 != message.VERSION or data[0] & 0x0F > message.MAX_TOKEN_LENGTH:
            return False  # a format error: the transport answers it
        mtype = (data[0] >> 4) & 0x03
        code = data[1]
        host, port = address[0], address[1]
        if mtype == _ACK or mtype == _RST:
            request = self.by_mid.get((host, port, (data[2] << 8) | data[3]))
            if request is None:
                return False
            if request.who is not None and self._dtls.who(address) != request.who:
                self._finish(request, RequestFailed(_CHANGED_HANDS))
                return True
            if mtype == _RST:
                self._finish(request, RequestFailed("the device reset the request"))
            elif code == _EMPTY:
                self._acknowledged(request)
            else:
                self._answer(request, data)
            return True
        if code < 64:
            return False  # a request: not ours to take
        token = data[4:4 + (data[0] & 0x0F)]
        request = self.by_token.get((host, port, token))
        if request is not None and request.who is not None and self._dtls.who(address) != request.who:
            self._finish(request, RequestFailed(_CHANGED_HANDS))
            return True
        mid_key = (host, port, (data[2] << 8) | data[3])
        if request is None:
            if mtype == _CON and mid_key in self.answered:
                self._send(message.empty(_ACK, mid_key[2]), address)  # the repeat of a response we took
                return True
            return False
        if mtype == _CON:
            self._send(message.empty(_ACK, mid_key[2]), address)
            self._remember_answered(mid_key)
        self._answer(request, data)
        return True

    def unreachable(self, address, error: OSError) -> None:
        """An ICMP error for `address`: what is in flight there will not be answered."""
        for request in list(self.by_peer.get((address[0], address[1]), ())):
            self._finish(request, RequestFailed(f"unreachable: {error.strerror or error}"))

    def close(self) -> None:
        self.closed = True
        for request in list(self.by_token.values()):
            self._finish(request, RequestFailed("the CoAP listener is closing"))
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")
        self._deadlines.clear()

    def _send(self, datagram: bytes, address) -> None:
        if self.interface._shutting_down is None:
            self.interface.transport.sendmsg(datagram, [], 0, address)

    def _due(self, request: _Request, delay: float) -> None:
        due = request.due = self.loop.time() + delay
        heapq.heappush(self._deadlines, (due, next(self._sequence), request))
        if due < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = due
            self._timer = self.loop.call_at(due, self._expire_due)

    def _expire_due(self) -> None:
        self._timer = None
        self._timer_at = float("-inf")  # no rescheduling from _due while the heap is worked off
        now = self.loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            due, _, request = heapq.heappop(deadlines)
            if not request.done and request.due == due:
                self._retransmit(request)
        self._timer_at = float("inf")
        if deadlines:
            self._timer_at = deadlines[0][0]
            self._timer = self.loop.call_at(self._timer_at, self._expire_due)

    def _retransmit(self, request: _Request) -> None:
        if request.acknowledged:
            self._finish(request, RequestFailed("no response after the empty ACK"))
            return
        if request.retransmits >= self.tuning.MAX_RETRANSMIT:
            self._finish(request, RequestFailed("no answer: timeout"))
            return
        if request.who is not None and self._dtls.who(request.peer) != request.who:
            self._finish(request, RequestFailed(_CHANGED_HANDS))  # never to whoever holds the address now
            return
        request.retransmits += 1
        request.timeout *= 2
        self.retransmitted += 1
        self._due(request, request.timeout)
        self._send(request.datagram, request.peer)

    def _acknowledged(self, request: _Request) -> None:
        """An empty ACK: stop retransmitting and give the separate response its time."""
        host, port = request.peer[0], request.peer[1]
        self.by_mid.pop((host, port, request.mid), None)
        request.acknowledged = True
        self.empty_acked += 1
        self._due(request, self.tuning.MAX_TRANSMIT_WAIT)

    def _answer(self, request: _Request, data: bytes) -> None:
        answer = decode_answer(data)
        self._finish(request, answer if answer is not None else RequestFailed("malformed response"))

    def _finish(self, request: _Request, outcome) -> None:
        host, port = request.peer[0], request.peer[1]
        self.by_mid.pop((host, port, request.mid), None)
        self.by_token.pop((host, port, request.token), None)
        in_flight = self.by_peer.get((host, port))
        if in_flight is not None:
            if request in in_flight:
                in_flight.remove(request)
            if not in_flight:
                del self.by_peer[(host, port)]
        request.done = True
        if request.future.done():
            return
        if isinstance(outcome, Exception):
            self.failed += 1
            self.failures[str(outcome)] += 1
            request.future.set_exception(outcome)
        else:
            request.future.set_result(outcome)

    def _remember_answered(self, key: tuple[str, int, int]) -> None:
        now = self.loop.time()
        expiry = self._answered_expiry
        while expiry and expiry[0][0] <= now:
            self.answered.pop(expiry.popleft()[1], None)
        self.answered[key] = None
        expiry.append((now + self.tuning.EXCHANGE_LIFETIME, key))
