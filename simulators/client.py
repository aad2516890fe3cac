"""One simulated device's LwM2M client: the client side of LwM2M 1.1 on its own UDP socket.

Registers (POST /rd), updates before its lifetime ends, de-registers, and reports by Send
(POST /dp), one request at a time (exchanges.py); the server's Read, Write, Execute, Discover
and Observe arriving on the same socket are answered by serving.py. The socket is plain CoAP or
a DTLS session, per the account in its object 0 (bootstrap.py); a device with only a bootstrap
account first asks the bootstrap server for one (POST /bs), waits for Bootstrap-Finish, then
registers with what was written.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from protocols.coap import message as coap
from protocols.lwm2m import content
from simulators import firmware_download, links, serving
from simulators.bootstrap import Account, Accounts
from simulators.exchanges import TIMEOUT, Endpoint, Exchange, Timing
from simulators.scheduler import Scheduler
from simulators.stats import Stats

if TYPE_CHECKING:
    from simulators.devices.base import SimulatedDevice

log = structlog.get_logger("simulators.client")

# What the client wants to do next, by priority (lowest value first).
DEREGISTER, REGISTER, UPDATE, SEND = 1, 2, 4, 8
MALFORMED = 16  # only ever an exchange's purpose: a Send corrupted on purpose
FETCH = firmware_download.FETCH  # the next block of a firmware download, when nothing else waits
BOOTSTRAP = 64  # only ever an exchange's purpose: a Bootstrap-Request (POST /bs)

IDLE, REGISTERED, REFUSED, STOPPED = "idle", "registered", "refused", "stopped"
BOOTSTRAPPING = "bootstrapping"  # the bootstrap server said 2.04; Bootstrap-Finish is awaited
_SEND_OPTIONS = coap.encode_options([(coap.URI_PATH, b"dp"),
                                     (coap.CONTENT_FORMAT, coap.uint(content.SENML_CBOR))])


@dataclass
class Network:
    """What every client of a run shares: timers, counters and settings."""

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
    # Links being opened (asyncio keeps only weak references to tasks).
    connecting: set = field(default_factory=set)


def _retry(client: LwM2MClient) -> None:
    client.want(REGISTER)


def _bootstrap_due(client: LwM2MClient) -> None:
    if client.state == BOOTSTRAPPING and time.monotonic() >= client.update_due - 0.001:
        log.info("no Bootstrap-Finish in time; asking again", endpoint=client.device.endpoint)
        client._retry_later()


def _update_due(client: LwM2MClient) -> None:
    if client.state == REGISTERED and time.monotonic() >= client.update_due - 0.001:
        client.want(UPDATE)


class Connection(asyncio.DatagramProtocol):
    """One transport of a client. Only the client's current one is heard: a bootstrap session
    closed after Finish, or a link replaced after a failure, falls silent at once."""

    __slots__ = ("client", "transport")

    def __init__(self, client: LwM2MClient) -> None:
        self.client = client
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if self.client.connection is self:
            self.client.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        if self.client.connection is self:
            self.client.link_error(exc)

    def connection_lost(self, exc) -> None:
        if self.client.connection is self and exc is not None:
            self.client.link_error(exc)


class LwM2MClient(Endpoint):
    __slots__ = ("device", "state", "location", "wants", "observations", "retry_s", "update_due",
                 "lifetime_s", "lifetime_changed", "ever_registered", "full_report", "queue_mode",
                 "observes_firmware", "accounts", "account", "connection", "server_address")

    def __init__(self, device: SimulatedDevice, network: Network, accounts: Accounts | None = None) -> None:
        super().__init__(network, device.noise, device.endpoint)
        self.device = device
        # Objects 0 and 1 as the factory left them; bootstrapping rewrites them.
        self.accounts = accounts or Accounts.factory(Account("coap://127.0.0.1:5683", "nosec"), bootstrap=False)
        self.account: Account | None = None  # whose server the current connection reaches
        self.connection: Connection | None = None
        self.server_address: tuple = ()
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
        if self.pending is not None and self.pending.purpose in (UPDATE, SEND, MALFORMED, FETCH, BOOTSTRAP):
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
        if self.pending is not None and self.pending.purpose in (REGISTER, BOOTSTRAP):
            self.network.registering -= 1
        elif self.pending is not None and self.pending.purpose == DEREGISTER:
            self.network.deregistering -= 1
        self.pending = None

    @property
    def done(self) -> bool:
        return self.state in (STOPPED, REFUSED) or (self.state == IDLE and self.pending is None
                                                    and self.network.stopping)

    # -- the link to a server -----------------------------------------------------------------

    def target(self) -> Account | None:
        """The account the client needs a link to now: its server's, else the bootstrap server's."""
        return self.accounts.operational() or self.accounts.bootstrap()

    @property
    def on_bootstrap_server(self) -> bool:
        """True while the link is the bootstrap account's: only then are Bootstrap-Delete,
        -Write and -Finish taken (from anyone else they would be a takeover)."""
        return self.account is not None and self.account == self.accounts.bootstrap()

    @property
    def secure(self) -> bool:
        """True while the link is a DTLS session."""
        return self.account is not None and links.secure(self.account.server_uri)

    async def connect(self, account: Account) -> bool:
        """Open a link to account's server in place of the current one; kick once it is up."""
        self.close_link()
        connection = self.connection = Connection(self)
        self.account = account
        try:
            transport = await links.open_link(connection, account)
        except (OSError, links.LinkError, ValueError) as exc:
            if self.connection is connection:
                self.connection = self.account = None
                self.network.stats.link_failures += 1
                log.warning("cannot reach the server", endpoint=self.device.endpoint,
                            server=account.server_uri, error=str(exc))
                self._retry_later()
            return False
        if self.connection is not connection:  # replaced or closed meanwhile
            transport.close()
            return False
        self.transport = transport
        self.recent = None  # message ids answered on another link mean nothing on this one
        self.server_address = links.resolve(account.server_uri)[1]
        self._kick()
        return True

    def reconnect(self, account: Account) -> None:
        """connect(), from the synchronous world of timers and datagrams."""
        task = asyncio.get_running_loop().create_task(self.connect(account))
        self.network.connecting.add(task)
        task.add_done_callback(self.network.connecting.discard)

    def close_link(self) -> None:
        transport, self.transport = self.transport, None
        self.connection = self.account = None
        if transport is not None:
            transport.close()

    def link_error(self, exc: Exception) -> None:
        """ICMP unreachable on a plain socket: the retransmissions will tell. A failed DTLS
        handshake (a wrong or revoked key): the link is gone and the exchange in flight fails;
        the next attempt opens a new one, after the usual back-off."""
        if isinstance(exc, OSError) and not _dtls_error(exc):
            super().error_received(exc)
            return
        self.network.stats.handshake_failures += 1
        log.info("DTLS handshake failed", endpoint=self.device.endpoint, error=str(exc))
        self.close_link()
        if self.pending is not None:
            self.network.stats.timeouts += 1
            self._finish(self.pending, TIMEOUT, None)

    def _kick(self) -> None:
        if self.pending is not None or not self.wants:
            return
        if self.transport is None:
            if self.connection is None and not (self.silent or self.down) and self.target() is not None:
                self.reconnect(self.target())
            return
        wants = self.wants
        if wants & DEREGISTER:
            self.wants = 0
            self.network.deregistering += 1
            self.request(DEREGISTER, coap.DELETE,
                          [(coap.URI_PATH, segment) for segment in self.location])
        elif wants & REGISTER:
            target = self.target()
            if target is None:
                self.wants = 0  # nothing to register with and nobody to ask: a dead device
                self.state = REFUSED
                return
            if target != self.account:
                self.reconnect(target)
                return
            self.wants &= ~(REGISTER | UPDATE)
            if self.accounts.operational() is None:
                self._request_bootstrap()
            else:
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

    def _request_bootstrap(self) -> None:
        """Bootstrap-Request (LwM2M 1.1 §5.2.7.1): the server answers 2.04, then writes the
        accounts and ends with Bootstrap-Finish (serving.py)."""
        self.network.registering += 1
        self.network.stats.bootstrap_requests += 1
        self.request(BOOTSTRAP, coap.POST, [(coap.URI_PATH, b"bs"),
                                            (coap.URI_QUERY, f"ep={self.device.endpoint}".encode())])

    def bootstrapped(self) -> None:
        """Bootstrap-Finish was answered: register with the account just written."""
        account = self.accounts.operational()
        if account is None:
            return
        self.network.stats.bootstraps += 1
        if self.state == BOOTSTRAPPING:
            self.state = IDLE
        if account.lifetime_s:
            self.lifetime_s = account.lifetime_s
        self.retry_s = self.network.timing.retry_min_s
        self.want(REGISTER)

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
        if code == TIMEOUT and self.account is not None and links.secure(self.account.server_uri):
            # The server may have dropped the DTLS session (a restart, an idle peer evicted,
            # a key revoked): the next exchange starts with a new handshake.
            self.close_link()
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
        if _busy(code, response):
            stats.registrations_busy += 1
        elif code == TIMEOUT:
            stats.registrations_lost += 1
        self._refused_or_retry("registration", code, response)

    def _refused_or_retry(self, what: str, code: int, response: coap.Message | None) -> None:
        """4.03 is final (not provisioned, or not allowed this way); anything else is tried again."""
        if code == coap.FORBIDDEN:
            self.state = REFUSED
            self.network.stats.refused += 1
            diagnostic = response.payload.decode("utf-8", "replace") if response else ""
            log.warning(f"{what} refused", endpoint=self.device.endpoint, diagnostic=diagnostic)
            return
        self._retry_later()

    def _bootstrap_answered(self, code: int, response: coap.Message | None) -> None:
        stats = self.network.stats
        self.network.registering -= 1
        if code == coap.CHANGED:
            # Finish may have overtaken this answer; then the account is there already.
            if self.accounts.operational() is None:
                self.state = BOOTSTRAPPING
                self.update_due = time.monotonic() + self.network.timing.bootstrap_timeout_s
                self.network.scheduler.at(self.update_due, _bootstrap_due, self)
            return
        stats.bootstrap_failures += 1
        self._refused_or_retry("bootstrap", code, response)

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
        if _busy(code, response):
            stats.sends_busy += 1
        elif code == TIMEOUT:
            stats.sends_lost += 1
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
    BOOTSTRAP: LwM2MClient._bootstrap_answered,
}


def _busy(code: int, response: coap.Message | None) -> bool:
    """5.03 with Max-Age: the server's "overloaded, try again in N s" (RFC 7252 §5.9.3.4)."""
    return code == coap.SERVICE_UNAVAILABLE and response is not None and response.option(coap.MAX_AGE) is not None


def _dtls_error(exc: Exception) -> bool:
    try:
        from protocols.coap.dtls import DtlsError
    except ImportError:
        return False
    return isinstance(exc, DtlsError)
