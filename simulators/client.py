"""One simulated device's LwM2M client: the client side of LwM2M 1.1 on its own UDP socket.

Registers (POST /rd), updates before its lifetime ends, de-registers, and reports by Send
(POST /dp), one request at a time (exchanges.py); the server's Read, Write, Execute, Discover
and Observe arriving on the same socket are answered by serving.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from protocols.coap import message as coap
from protocols.lwm2m import content
from simulators import firmware_download, serving
from simulators.exchanges import Endpoint, Exchange, Timing
from simulators.scheduler import Scheduler
from simulators.stats import Stats

if TYPE_CHECKING:
    from simulators.devices.base import SimulatedDevice

log = structlog.get_logger("simulators.client")

# What the client wants to do next, by priority (lowest value first).
DEREGISTER, REGISTER, UPDATE, SEND = 1, 2, 4, 8
MALFORMED = 16  # only ever an exchange's purpose: a Send corrupted on purpose
FETCH = firmware_download.FETCH  # the next block of a firmware download, when nothing else waits

IDLE, REGISTERED, REFUSED, STOPPED = "idle", "registered", "refused", "stopped"
_SEND_OPTIONS = coap.encode_options([(coap.URI_PATH, b"dp"),
                                     (coap.CONTENT_FORMAT, coap.uint(content.SENML_CBOR))])


@dataclass
class Network:
    """What every client of a run shares: the server, timers, counters and settings."""

    server: tuple
    scheduler: Scheduler
    stats: Stats
    lifetime_s: int
    timing: Timing = field(default_factory=Timing)
    # First registrations in flight, and how many may be (a server restart's storm, bounded).
    registering: int = 0
    max_registering: int = 256
    # De-registrations in flight at shutdown, bounded by the same window.
    deregistering: int = 0
    # Shutting down: no new exchanges but De-register.
    stopping: bool = False


def _retry(client: LwM2MClient) -> None:
    client.want(REGISTER)


def _update_due(client: LwM2MClient) -> None:
    if client.state == REGISTERED and time.monotonic() >= client.update_due - 0.001:
        client.want(UPDATE)


class LwM2MClient(Endpoint):
    __slots__ = ("device", "state", "location", "wants", "observations", "retry_s", "update_due",
                 "lifetime_s", "lifetime_changed", "ever_registered", "full_report", "queue_mode",
                 "observes_firmware")

    def __init__(self, device: SimulatedDevice, network: Network) -> None:
        super().__init__(network, device.noise, device.endpoint)
        self.device = device
        self.state = IDLE
        self.location: tuple[bytes, ...] = ()
        self.wants = 0
        self.observations: dict[bytes, serving.Observation] | None = None
        self.retry_s = network.timing.retry_min_s
        self.update_due = 0.0
        self.lifetime_s = network.lifetime_s
        self.lifetime_changed = False
        self.ever_registered = False
        self.full_report = True
        # Binding UQ: the server holds its requests until the device registers or updates.
        self.queue_mode = False
        # False: Observe on object 5 is answered as a plain read (RFC 7641 §2), so the server
        # learns of download and install states only by reading them.
        self.observes_firmware = True

    # -- what the server sends that is not an answer ------------------------------------------

    def on_request(self, request: coap.Message) -> None:
        serving.serve(self, request)

    def on_other_ack(self, mid: int) -> None:
        serving.acknowledged(self, mid)

    def on_other_reset(self, mid: int) -> None:
        serving.reset(self, mid)

    # -- what the device wants ----------------------------------------------------------------

    def want(self, action: int) -> None:
        if self.silent or self.down or self.state in (REFUSED, STOPPED):
            return
        if self.network.stopping and action != DEREGISTER:
            return
        self.wants |= action
        self._kick()

    def report_soon(self) -> None:
        """Something changed that a real device would report at once (a switch, an alarm)."""
        if self.state == REGISTERED:
            self.want(SEND)
        serving.notify_observers(self)

    def notify_observers(self) -> None:
        serving.notify_observers(self)

    def stop(self) -> None:
        """Shutting down: de-register if registered, otherwise just go quiet."""
        self.wants = 0
        if self.pending is not None and self.pending.purpose in (UPDATE, SEND, MALFORMED, FETCH):
            self._abandon()  # no point waiting out a report's retransmissions to say goodbye
        if self.state == REGISTERED and not self.silent:
            self.want(DEREGISTER)
        elif self.pending is None:
            self.state = STOPPED

    def go_silent(self) -> None:
        """The silent fault: no more datagrams in or out; the server sees the lifetime run out."""
        self.silent = True
        self._lose_power(STOPPED)

    def reboot(self) -> None:
        """A device restart: registration and observations are gone; it registers anew."""
        self._lose_power(IDLE)
        self.full_report = True
        self.network.scheduler.after(1.0, _retry, self)

    def power_off(self) -> None:
        """Off for a reboot into new firmware: deaf and mute until power_on."""
        self._lose_power(IDLE)
        self.down = True

    def power_on(self) -> None:
        """Booted: a new registration, and everything reported afresh."""
        self.down = False
        self.full_report = True
        self.want(REGISTER)

    def _lose_power(self, state: str) -> None:
        """The registration, the exchange in flight, what it wanted and its observers are gone."""
        if self.state == REGISTERED:
            self.network.stats.online -= 1
        self.state = state
        self._abandon()
        self.wants = 0
        self.observations = None

    def _abandon(self) -> None:
        """Forget the exchange in flight, as a device that lost power would."""
        if self.pending is not None and self.pending.purpose == REGISTER:
            self.network.registering -= 1
        elif self.pending is not None and self.pending.purpose == DEREGISTER:
            self.network.deregistering -= 1
        self.pending = None

    @property
    def done(self) -> bool:
        return self.state in (STOPPED, REFUSED) or (self.state == IDLE and self.pending is None
                                                    and self.network.stopping)

    def _kick(self) -> None:
        if self.pending is not None or self.transport is None or not self.wants:
            return
        wants = self.wants
        if wants & DEREGISTER:
            self.wants = 0
            self.network.deregistering += 1
            self.request(DEREGISTER, coap.DELETE,
                          [(coap.URI_PATH, segment) for segment in self.location])
        elif wants & REGISTER:
            self.wants &= ~(REGISTER | UPDATE)
            self._register()
        elif wants & UPDATE:
            self.wants &= ~UPDATE
            if self.state == REGISTERED:
                options = [(coap.URI_PATH, segment) for segment in self.location]
                if self.lifetime_changed:
                    options.append((coap.URI_QUERY, f"lt={self.lifetime_s}".encode()))
                    self.lifetime_changed = False
                self.request(UPDATE, coap.POST, options)
            else:
                self._kick()
        elif wants & SEND:
            self.wants &= ~SEND
            if self.state == REGISTERED:
                self._send_report()
            else:
                self._kick()
        elif wants & FETCH:
            self.wants &= ~FETCH
            if not firmware_download.send_block(self):
                self._kick()

    # -- outgoing requests --------------------------------------------------------------------

    def _register(self) -> None:
        options = [(coap.URI_PATH, b"rd"), (coap.CONTENT_FORMAT, coap.uint(40)),
                   (coap.URI_QUERY, f"ep={self.device.endpoint}".encode()),
                   (coap.URI_QUERY, f"lt={self.lifetime_s}".encode()),
                   (coap.URI_QUERY, b"lwm2m=1.1"),
                   (coap.URI_QUERY, b"b=UQ" if self.queue_mode else b"b=U")]
        self.network.registering += 1
        self.request(REGISTER, coap.POST, options, self.device.tree.registration_links)

    def _send_report(self) -> None:
        payload = self.device.report(full=self.full_report)
        if payload is None:
            self._kick()
            return
        self.full_report = False
        stats = self.network.stats
        mid, token = self.next_ids()
        datagram = coap.encode_with_options(coap.CON, coap.POST, mid, token, _SEND_OPTIONS, payload)
        purpose = SEND
        if self.device.faults.malformed and self.device.noise.chance(self.device.faults.malformed):
            datagram = self._corrupt(datagram, len(token), payload)
            purpose = MALFORMED
            stats.malformed_sent += 1
            stats.fault("malformed")
            # The values never arrived: report everything again next time.
            self.full_report = True
        else:
            stats.sends += 1
        self.transmit(purpose, mid, token, datagram)

    def _corrupt(self, datagram: bytes, token_length: int, payload: bytes) -> bytes:
        """A firmware bug's datagram: a reserved option nibble, or a SenML pack cut short."""
        first_option = 4 + token_length
        if self.device.noise.random() < 0.5:
            # 0xB2 (Uri-Path, 2 bytes) becomes 0xF2: option delta 15 is a message format error.
            return (datagram[:first_option] + bytes([0xF0 | (datagram[first_option] & 0x0F)])
                    + datagram[first_option + 1:])
        return datagram[:len(datagram) - len(payload)] + payload[:max(1, len(payload) // 2)]

    # -- outcomes -----------------------------------------------------------------------------

    def on_outcome(self, exchange: Exchange, code: int, response: coap.Message | None) -> None:
        if exchange.purpose == FETCH:
            firmware_download.block_answered(self, exchange, code, response)
        else:
            _OUTCOMES[exchange.purpose](self, code, response)
        self._kick()

    def _registered(self, code: int, response: coap.Message | None) -> None:
        stats = self.network.stats
        self.network.registering -= 1
        if code == coap.CREATED:
            self.location = tuple(v for n, v in response.options if n == coap.LOCATION_PATH)
            if self.state != REGISTERED:
                stats.online += 1
            self.state = REGISTERED
            stats.registrations += 1
            if not self.ever_registered:
                self.ever_registered = True
                stats.registered += 1
            self.retry_s = self.network.timing.retry_min_s
            self.full_report = True
            if self.network.stopping:
                self.want(DEREGISTER)
                return
            self._schedule_update()
            self.device.on_registered()
            return
        stats.registration_failures += 1
        if code == coap.FORBIDDEN:
            self.state = REFUSED
            stats.refused += 1
            diagnostic = response.payload.decode("utf-8", "replace") if response else ""
            log.warning("registration refused", endpoint=self.device.endpoint, diagnostic=diagnostic)
            return
        self._retry_later()

    def _retry_later(self) -> None:
        if self.state == REGISTERED:
            self.network.stats.online -= 1
        self.state = IDLE
        delay = self.retry_s * self.device.noise.uniform(1.0, 2.0)
        self.retry_s = min(self.retry_s * 2, self.network.timing.retry_max_s)
        self.network.scheduler.after(delay, _retry, self)

    def _schedule_update(self) -> None:
        # LwM2M leaves the margin to the client; 80-90 % of the lifetime spreads the updates.
        delay = self.lifetime_s * self.device.noise.uniform(0.8, 0.9)
        self.update_due = time.monotonic() + delay
        self.network.scheduler.at(self.update_due, _update_due, self)

    def _updated(self, code: int, response: coap.Message | None) -> None:
        stats = self.network.stats
        if code == coap.CHANGED:
            stats.updates += 1
            self._schedule_update()
            return
        stats.update_failures += 1
        if self.state == REGISTERED:
            stats.online -= 1
        self.state = IDLE
        # 4.04: the server forgot us; a timeout: it may have. Either way, register again.
        self.want(REGISTER)

    def _sent(self, code: int, response: coap.Message | None) -> None:
        stats = self.network.stats
        if code == coap.CHANGED:
            stats.sends_acked += 1
            return
        stats.sends_failed += 1
        self.full_report = True
        if code in (coap.FORBIDDEN, coap.NOT_FOUND) and self.state == REGISTERED:
            stats.online -= 1
            self.state = IDLE
            self.want(REGISTER)

    def _malformed_answered(self, code: int, response: coap.Message | None) -> None:
        if code == coap.BAD_REQUEST:
            self.network.stats.malformed_rejected += 1
        else:
            log.info("malformed datagram not answered 4.00", endpoint=self.device.endpoint,
                     code=coap.code_text(code) if code >= 0 else "timeout")

    def _deregistered(self, code: int, response: coap.Message | None) -> None:
        self.network.deregistering -= 1
        if self.state == REGISTERED:
            self.network.stats.online -= 1
        if code == coap.DELETED:
            self.network.stats.deregistered += 1
        self.state = STOPPED


_OUTCOMES = {
    REGISTER: LwM2MClient._registered,
    UPDATE: LwM2MClient._updated,
    SEND: LwM2MClient._sent,
    MALFORMED: LwM2MClient._malformed_answered,
    DEREGISTER: LwM2MClient._deregistered,
}
