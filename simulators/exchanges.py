"""A device's UDP endpoint: its confirmable requests and the messages that answer them.

RFC 7252 §4 for a constrained client: one outstanding request (NSTART = 1), retransmitted
with exponential back-off until an ACK or a piggybacked response; an empty ACK means the
response comes separately, matched by token and acknowledged (again, if the server repeats
it). Timers live on the run's shared scheduler, one heap entry per transmission. What the
exchanges mean is left to the subclass (client.py); requests from the server go to serving.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import structlog

from protocols.coap import message as coap
from simulators.noise import Noise

log = structlog.get_logger("simulators.exchanges")

TIMEOUT, RESET = -1, -2  # outcomes that are not CoAP codes
WAIT_ACK, WAIT_RESPONSE, DONE = 0, 1, 2
RECENT_MESSAGES = 8


@dataclass(frozen=True)
class Timing:
    """RFC 7252 §4.8 transmission parameters, and how long to back off after failures."""

    ack_timeout_s: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4
    # How long to wait for a separate response after an empty ACK.
    response_timeout_s: float = 30.0
    retry_min_s: float = 10.0
    retry_max_s: float = 300.0
    # How long a device waits for Bootstrap-Finish after the bootstrap server's 2.04.
    bootstrap_timeout_s: float = 60.0


class Exchange:
    __slots__ = ("endpoint", "purpose", "mid", "token", "datagram", "retransmits", "timeout",
                 "state", "due")

    def __init__(self, endpoint: Endpoint, purpose: int, mid: int, token: bytes, datagram: bytes,
                 timeout: float) -> None:
        self.endpoint = endpoint
        self.purpose = purpose
        self.mid = mid
        self.token = token
        self.datagram = datagram
        self.timeout = timeout
        self.retransmits = 0
        self.state = WAIT_ACK
        self.due = 0.0


def _exchange_timer(exchange: Exchange) -> None:
    exchange.endpoint._on_timer(exchange)


class Endpoint(asyncio.DatagramProtocol):
    """`network` must offer scheduler, stats and timing; subclasses implement the on_* hooks."""

    __slots__ = ("network", "noise", "name", "transport", "mid", "token_seq", "pending", "recent",
                 "silent", "down")

    def __init__(self, network: Any, noise: Noise, name: str) -> None:
        self.network = network
        self.noise = noise
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None
        self.mid = noise.randrange(0x10000)
        self.token_seq = noise.randrange(1 << 32)
        self.pending: Exchange | None = None
        self.recent: dict[int, bytes] | None = None
        self.silent = False
        self.down = False  # rebooting: deaf and mute until it boots

    # -- hooks --------------------------------------------------------------------------------

    def on_request(self, request: coap.Message) -> None:
        raise NotImplementedError

    def on_outcome(self, exchange: Exchange, code: int, response: coap.Message | None) -> None:
        """The exchange ended: a response code, TIMEOUT or RESET."""
        raise NotImplementedError

    def on_other_ack(self, mid: int) -> None:
        """An ACK that is not the pending request's (a notification's, or a late duplicate)."""

    def on_other_reset(self, mid: int) -> None:
        """An RST that is not the pending request's."""

    # -- asyncio protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while the server is down: the retransmissions will tell.
        log.debug("socket error", endpoint=self.name, error=str(exc))

    def datagram_received(self, data: bytes, addr) -> None:
        if self.silent or self.down:
            return
        try:
            message = coap.decode(data)
        except coap.MessageFormatError as exc:
            log.warning("malformed datagram from the server", endpoint=self.name, problem=str(exc))
            return
        try:
            if message.is_request:
                self.on_request(message)
            elif message.mtype == coap.ACK:
                self._on_ack(message)
            elif message.mtype == coap.RST:
                self._on_reset(message)
            elif message.code >= 64:
                self._on_separate_response(message)
        except Exception:  # noqa: BLE001 - our bug; one device's must not silence the rest
            stats = self.network.stats
            stats.errors += 1
            if stats.errors <= 10:
                log.exception("simulated device failed on a datagram", endpoint=self.name)

    # -- sending ------------------------------------------------------------------------------

    def next_mid(self) -> int:
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def next_ids(self) -> tuple[int, bytes]:
        self.token_seq = (self.token_seq + 1) & 0xFFFFFFFF
        return self.next_mid(), self.token_seq.to_bytes(4, "big")

    def request(self, purpose: int, code: int, options: list[tuple[int, bytes]],
                payload: bytes = b"") -> None:
        mid, token = self.next_ids()
        self.transmit(purpose, mid, token, coap.encode(coap.CON, code, mid, token, options, payload))

    def transmit(self, purpose: int, mid: int, token: bytes, datagram: bytes) -> None:
        """Send a CON request built by the caller and track it until it ends."""
        timing = self.network.timing
        timeout = timing.ack_timeout_s * self.noise.uniform(1.0, timing.ack_random_factor)
        exchange = Exchange(self, purpose, mid, token, datagram, timeout)
        self.pending = exchange
        self.transport.sendto(datagram)
        exchange.due = time.monotonic() + timeout
        self.network.scheduler.at(exchange.due, _exchange_timer, exchange)

    def remember(self, mid: int, reply: bytes) -> None:
        """Keep the reply to an incoming confirmable message for its retransmissions."""
        if self.recent is None:
            self.recent = {}
        elif len(self.recent) >= RECENT_MESSAGES:
            del self.recent[next(iter(self.recent))]
        self.recent[mid] = reply

    def _on_timer(self, exchange: Exchange) -> None:
        if exchange is not self.pending or exchange.state == DONE:
            return
        if time.monotonic() < exchange.due:
            return  # an earlier timer of this exchange: an empty ACK moved its deadline
        timing, stats = self.network.timing, self.network.stats
        if exchange.state == WAIT_ACK and exchange.retransmits < timing.max_retransmit:
            exchange.retransmits += 1
            exchange.timeout *= 2
            stats.retransmissions += 1
            if self.transport is not None:
                self.transport.sendto(exchange.datagram)
            exchange.due = time.monotonic() + exchange.timeout
            self.network.scheduler.at(exchange.due, _exchange_timer, exchange)
            return
        stats.timeouts += 1
        self._finish(exchange, TIMEOUT, None)

    # -- receiving ----------------------------------------------------------------------------

    def _on_ack(self, message: coap.Message) -> None:
        exchange = self.pending
        if exchange is None or message.mid != exchange.mid or exchange.state != WAIT_ACK:
            self.on_other_ack(message.mid)
            return
        if message.code == coap.EMPTY:
            # The server will answer separately (it is waiting on a group commit).
            exchange.state = WAIT_RESPONSE
            exchange.due = time.monotonic() + self.network.timing.response_timeout_s
            self.network.scheduler.at(exchange.due, _exchange_timer, exchange)
            return
        if message.token == exchange.token:
            self._finish(exchange, message.code, message)

    def _on_separate_response(self, message: coap.Message) -> None:
        exchange = self.pending
        if exchange is not None and message.token == exchange.token and exchange.state != DONE:
            if message.mtype == coap.CON:
                ack = coap.empty(coap.ACK, message.mid)
                self.transport.sendto(ack)
                self.remember(message.mid, ack)
            self.network.stats.separate_responses += 1
            self._finish(exchange, message.code, message)
        elif message.mtype == coap.CON:
            # A retransmission (our ACK was lost) gets the same ACK again (RFC 7252 §4.5);
            # a response to nothing we asked is rejected.
            cached = self.recent.get(message.mid) if self.recent is not None else None
            self.transport.sendto(cached or coap.empty(coap.RST, message.mid))

    def _on_reset(self, message: coap.Message) -> None:
        exchange = self.pending
        if exchange is not None and message.mid == exchange.mid and exchange.state == WAIT_ACK:
            self._finish(exchange, RESET, None)
        else:
            self.on_other_reset(message.mid)

    def _finish(self, exchange: Exchange, code: int, response: coap.Message | None) -> None:
        exchange.state = DONE
        self.pending = None
        self.on_outcome(exchange, code, response)
