"""One simulated device's UDP socket and its confirmable exchanges (RFC 7252 §4 and §5.2).

A :class:`ClientEndpoint` sends CON requests, matches piggybacked ACKs by message id, follows
an empty ACK to the separate response by token (and ACKs that response), and leaves
retransmission to the :class:`Retransmitter` shared by every endpoint of a worker: one heap
swept on a short tick instead of a timer per request, because timers cost more than the
requests they guard.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import socket
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.coap import message

# Outcome codes that are not CoAP response codes.
TIMEOUT = -1
RESET = -2
CANCELLED = -3

_WAIT_ACK, _WAIT_SEPARATE, _DONE = 0, 1, 2


@dataclass(frozen=True)
class Timing:
    """RFC 7252 §4.8 transmission parameters."""

    ack_timeout: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4

    @property
    def max_transmit_wait(self) -> float:
        return self.ack_timeout * (2 ** (self.max_retransmit + 1) - 1) * self.ack_random_factor

    @property
    def exchange_lifetime(self) -> float:
        span = self.ack_timeout * (2**self.max_retransmit - 1) * self.ack_random_factor
        return span + 2 * 100.0 + self.ack_timeout


@dataclass
class ExchangeStats:
    """Counters of one worker, over all its endpoints."""

    started: int = 0
    retransmissions: int = 0
    responses_by_code: Counter = field(default_factory=Counter)
    timeouts: int = 0
    resets: int = 0
    cancelled: int = 0
    separate_responses: int = 0
    duplicate_responses: int = 0
    token_mismatches: int = 0
    server_requests: int = 0
    malformed: int = 0
    icmp_errors: int = 0
    dtls_failures: int = 0
    mid_reuse_within_lifetime: int = 0
    latencies: array = field(default_factory=lambda: array("d"))


class Exchange:
    __slots__ = (
        "endpoint", "seq", "mid", "token", "datagram", "first_sent", "timeout", "due",
        "retransmits", "state", "on_done",
    )

    def __init__(self, endpoint, seq, mid, token, datagram, on_done):
        self.endpoint = endpoint
        self.seq = seq
        self.mid = mid
        self.token = token
        self.datagram = datagram
        self.on_done = on_done
        self.retransmits = 0
        self.state = _WAIT_ACK


OnDone = Callable[[Exchange, int, bytes, float], None]


class Retransmitter:
    """Retransmits unacknowledged CONs and times exchanges out, for every endpoint of a worker."""

    def __init__(self, timing: Timing, stats: ExchangeStats, tick: float = 0.01):
        self.timing = timing
        self.stats = stats
        self.tick = tick
        self._heap: list = []
        self._order = itertools.count()
        self.on_tick: Callable[[float], None] | None = None

    def schedule(self, exchange: Exchange, due: float) -> None:
        exchange.due = due
        heapq.heappush(self._heap, (due, next(self._order), exchange))

    async def run(self) -> None:
        heap = self._heap
        while True:
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                due, _, exchange = heapq.heappop(heap)
                if exchange.state == _DONE or exchange.due != due:
                    continue
                if exchange.state == _WAIT_ACK and exchange.retransmits < self.timing.max_retransmit:
                    exchange.retransmits += 1
                    exchange.timeout *= 2
                    self.stats.retransmissions += 1
                    exchange.endpoint.transmit(exchange.datagram)
                    self.schedule(exchange, now + exchange.timeout)
                else:
                    exchange.endpoint.finish(exchange, TIMEOUT, b"", now)
            if self.on_tick is not None:
                self.on_tick(now)


class ClientEndpoint(asyncio.DatagramProtocol):
    """One device: a connected UDP socket with its own message-id and token space."""

    def __init__(self, index: int, retransmitter: Retransmitter):
        self.index = index
        self.retransmitter = retransmitter
        self.stats = retransmitter.stats
        self.transport: asyncio.DatagramTransport | None = None
        self.by_mid: dict[int, Exchange] = {}
        self.by_token: dict[bytes, Exchange] = {}
        # RFC 7252 wants message ids and tokens hard to guess; one 32-bit counter per socket
        # gives both (the token is the counter, the message id its low 16 bits).
        self._counter = random.getrandbits(32)
        self._mid_cycle_start = self._counter & 0xFFFF
        self._mid_cycle_time = time.monotonic()
        self.outstanding = 0
        self.next_seq = 0
        self.location: tuple[str, ...] | None = None  # Location-Path of its registration

    @classmethod
    async def open(cls, index, retransmitter, target, family, buffer_size, credentials=None):
        """Its socket to target: plain, or with `credentials` a DTLS session (protocols.coap.dtls)
        whose handshake starts now (what is sent before it ends is queued)."""
        loop = asyncio.get_running_loop()
        if credentials is not None:
            from protocols.coap.dtls import open_dtls_endpoint

            _, endpoint = await open_dtls_endpoint(loop, lambda: cls(index, retransmitter), target, credentials)
            return endpoint
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if buffer_size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
        sock.setblocking(False)
        sock.connect(target)
        _, endpoint = await loop.create_datagram_endpoint(
            lambda: cls(index, retransmitter), sock=sock
        )
        return endpoint

    def connection_made(self, transport):
        self.transport = transport

    def error_received(self, exc):
        # ICMP port unreachable on a connected socket: the server is not (yet) listening; or a
        # DTLS handshake that failed (its requests then time out).
        if isinstance(exc, OSError):
            self.stats.icmp_errors += 1
        else:
            self.stats.dtls_failures += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def transmit(self, datagram: bytes) -> None:
        self.transport.sendto(datagram)

    def request(
        self, code: int, encoded_options: bytes, payload: bytes, seq: int, on_done: OnDone
    ) -> Exchange:
        counter = self._counter = (self._counter + 1) & 0xFFFFFFFF
        mid = counter & 0xFFFF
        if mid == self._mid_cycle_start:
            now = time.monotonic()
            if now - self._mid_cycle_time < self.retransmitter.timing.exchange_lifetime:
                self.stats.mid_reuse_within_lifetime += 1
            self._mid_cycle_time = now
        token = counter.to_bytes(4, "big")
        datagram = message.encode_with_options(message.CON, code, mid, token, encoded_options, payload)
        exchange = Exchange(self, seq, mid, token, datagram, on_done)
        self.by_mid[mid] = exchange
        self.by_token[token] = exchange
        self.outstanding += 1
        self.stats.started += 1
        timing = self.retransmitter.timing
        exchange.timeout = timing.ack_timeout * random.uniform(1.0, timing.ack_random_factor)
        now = exchange.first_sent = time.monotonic()
        self.transport.sendto(datagram)
        self.retransmitter.schedule(exchange, now + exchange.timeout)
        return exchange

    def finish(self, exchange: Exchange, outcome: int, datagram: bytes, now: float) -> None:
        exchange.state = _DONE
        self.by_mid.pop(exchange.mid, None)
        self.by_token.pop(exchange.token, None)
        self.outstanding -= 1
        stats = self.stats
        if outcome >= 0:
            stats.responses_by_code[outcome] += 1
            stats.latencies.append(now - exchange.first_sent)
        elif outcome == TIMEOUT:
            stats.timeouts += 1
        elif outcome == RESET:
            stats.resets += 1
        else:
            stats.cancelled += 1
        exchange.on_done(exchange, outcome, datagram, now)

    def cancel_all(self) -> None:
        now = time.monotonic()
        for exchange in list(self.by_token.values()):
            self.finish(exchange, CANCELLED, b"", now)

    def datagram_received(self, data, addr):
        try:
            mtype, code, mid, token = message.decode_header(data)
        except message.MessageFormatError:
            self.stats.malformed += 1
            return
        if mtype == message.ACK or mtype == message.RST:
            exchange = self.by_mid.get(mid)
            if exchange is None or exchange.state != _WAIT_ACK:
                # The answer to a retransmission whose original was answered already.
                self.stats.duplicate_responses += 1
                return
            if mtype == message.RST:
                self.finish(exchange, RESET, data, time.monotonic())
            elif code == message.EMPTY:
                exchange.state = _WAIT_SEPARATE
                del self.by_mid[mid]
                timing = self.retransmitter.timing
                self.retransmitter.schedule(exchange, exchange.first_sent + timing.max_transmit_wait)
            elif token != exchange.token:
                self.stats.token_mismatches += 1
            else:
                self.finish(exchange, code, data, time.monotonic())
            return
        if code == message.EMPTY:
            # A CoAP ping (CON empty) gets RST; anything else empty is noise.
            if mtype == message.CON and code == message.EMPTY:
                self.transport.sendto(message.encode(message.RST, message.EMPTY, mid))
            else:
                self.stats.malformed += 1
            return
        if message.is_request(code):
            # LwM2M servers may Read or Observe a registered client; a load client has nothing
            # to show, but it answers so the server does not retransmit into the measurement.
            self.stats.server_requests += 1
            if mtype == message.CON:
                self.transport.sendto(message.encode(message.ACK, 132, mid, token))  # 4.04
            return
        if mtype == message.CON:
            self.transport.sendto(message.encode(message.ACK, message.EMPTY, mid))
        exchange = self.by_token.get(token)
        if exchange is None or exchange.state == _DONE:
            self.stats.duplicate_responses += 1
            return
        self.stats.separate_responses += 1
        self.finish(exchange, code, data, time.monotonic())
