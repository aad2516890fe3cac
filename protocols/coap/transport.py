"""How Fleet runs aiocoap's udp6 transport: malformed datagrams answered, exchange state bounded,
the common Send kept off aiocoap's slow path.

aiocoap drops datagrams it cannot parse without a word, and lets some message format errors
through. Every datagram aiocoap would get is checked by :mod:`protocols.coap.message` first; a
confirmable request whose header is readable is answered with 4.00 and a short diagnostic,
another confirmable message with a Reset. Plain confirmable POSTs (and GETs of firmware
blocks) go to :mod:`protocols.coap.fastpath` when the root resource offers one, the socket is drained
several datagrams per wakeup, and the message manager finds a peer's running exchanges by
count rather than by scanning all of them.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import os
import socket
import struct
from collections.abc import Iterator

import structlog
from aiocoap import error, messagemanager
from aiocoap.message import Direction, Message
from aiocoap.numbers.constants import TransportTuning
from aiocoap.transports import udp6
from aiocoap.util import socknumbers
from aiocoap.util.asyncio import recvmsg

from protocols.coap import message
from protocols.coap.complaints import MalformedPeers
from protocols.coap.fastpath import FastPath
from protocols.coap.outbound import OutboundRequests
from protocols.coap.peerlimit import PeerLimit

log = structlog.get_logger("fleet.coap")

RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024


class CityNetworkTuning(TransportTuning):
    """RFC 7252 defaults, except two that matter at city scale.

    MAX_LATENCY 100 s keeps every exchange's duplicate-detection entry (about 1 KB) for 247 s;
    a city's networks deliver in well under 10 s, which cuts that memory to about a quarter
    while still covering every retransmission (MAX_TRANSMIT_SPAN stays 45 s).
    EMPTY_ACK_DELAY is raised so a request waiting on a group commit is answered piggybacked
    (one datagram) rather than with an empty ACK and a separate response (three).
    """

    MAX_LATENCY = 10.0
    EMPTY_ACK_DELAY = 1.0


CITY_TUNING = CityNetworkTuning()


def format_error_reply(data: bytes, diagnostic: str) -> bytes | None:
    """What a datagram with a message format error gets back (RFC 7252 §4.2, §4.3): a CON
    request whose token we can read gets a piggybacked 4.00 with the diagnostic, any other CON
    whose header we can read a Reset; everything else is ignored."""
    if len(data) < 4 or data[0] >> 6 != message.VERSION or (data[0] >> 4) & 0x03 != message.CON:
        return None
    token_length = data[0] & 0x0F
    mid = (data[2] << 8) | data[3]
    if token_length > message.MAX_TOKEN_LENGTH or len(data) < 4 + token_length or not message.is_request(data[1]):
        return message.empty(message.RST, mid)
    return message.encode_with_options(message.ACK, message.BAD_REQUEST, mid, data[4:4 + token_length], b"",
                                       diagnostic.encode())


def _datagram_msg_received(self, data, ancdata, flags, address):
    """udp6.MessageInterfaceUDP6.datagram_msg_received with malformed-input replies and the
    fast path for plain confirmable POSTs (aiocoap 0.4)."""
    pktinfo = None
    for cmsg_level, cmsg_type, cmsg_data in ancdata:
        if cmsg_level == socket.IPPROTO_IPV6 and cmsg_type == socket.IPV6_PKTINFO:
            pktinfo = cmsg_data
    outbound = self.__dict__.get("_fleet_outbound")
    if outbound is not None and outbound.offer(data, address):
        return
    fast = self.__dict__.get("_fleet_fast_path", _UNRESOLVED)
    if fast is _UNRESOLVED:
        fast = self._fleet_fast_path = _fast_path_for(self)
    peer_limit = self.__dict__.get("_fleet_peer_limit")
    if fast is not None and fast.offer_download(data, pktinfo, address, peer_limit):
        return
    if peer_limit is not None:
        refused = peer_limit.refuse(data, address, self.loop.time())
        # A retransmission of a Send already taken passes: refusing it would end that exchange
        # with a 5.03 while its data commits, and the device would send the data again.
        if refused is not False and not (fast is not None and fast.has_seen(data, address)):
            if refused is not None:
                self.transport.sendmsg(refused, [], 0, address)
            return
    if fast is not None and fast.offer(data, pktinfo, address):
        return
    try:
        message.parse(data)  # stricter than aiocoap, which lets some format errors through
        incoming = Message.decode(data, self._fleet_remote_type(address, self, pktinfo=pktinfo))
    except (message.MessageFormatError, error.UnparsableMessage, ValueError, struct.error, IndexError) as exc:
        diagnostic = str(exc) if isinstance(exc, message.MessageFormatError) else "malformed options"
        complaints = self.__dict__.get("_fleet_complaints")
        if complaints is None:
            complaints = self._fleet_complaints = MalformedPeers()
        level = log.warning if complaints.first(address[0]) else log.debug
        level("malformed CoAP datagram", peer=address[0], port=address[1], problem=diagnostic)
        reply = format_error_reply(data, "malformed CoAP: " + diagnostic)
        if reply is not None:
            self.transport.sendmsg(reply, [], 0, address)
        return
    incoming.direction = Direction.INCOMING
    incoming.transport_tuning = CITY_TUNING
    try:
        self._ctx.dispatch_message(incoming)
    except BaseException as exc:
        self.log.error("Exception raised through dispatch_message: %s", exc, exc_info=exc)
        raise


_UNRESOLVED = object()
_original_errqueue_received = udp6.MessageInterfaceUDP6.datagram_errqueue_received


def _datagram_errqueue_received(self, data, ancdata, flags, address):
    """An ICMP error also ends the outbound fast path's requests to that address."""
    outbound = self.__dict__.get("_fleet_outbound")
    if outbound is not None:
        for cmsg_level, cmsg_type, cmsg_data in ancdata:
            if cmsg_level == socket.IPPROTO_IPV6 and cmsg_type == socknumbers.IPV6_RECVERR:
                errno_value = udp6.SockExtendedErr.load(cmsg_data).ee_errno
                outbound.unreachable(address, OSError(errno_value, os.strerror(errno_value)))
    return _original_errqueue_received(self, data, ancdata, flags, address)


def outbound_requests(interface) -> OutboundRequests:
    """The interface's outbound fast path, created on first use."""
    outbound = interface.__dict__.get("_fleet_outbound")
    if outbound is None:
        outbound = interface._fleet_outbound = OutboundRequests(interface, CITY_TUNING)
    return outbound



def limit_peers(context, limit: PeerLimit) -> None:
    """Hold every peer of the context's udp6 interfaces (coap and coaps) to `limit`
    (protocols.coap.peerlimit)."""
    for token_manager in context.request_interfaces:
        interface = getattr(getattr(token_manager, "token_interface", None), "message_interface", None)
        if isinstance(interface, udp6.MessageInterfaceUDP6):
            interface._fleet_peer_limit = limit


def _fast_path_for(interface) -> FastPath | None:
    """A server context whose root resource offers ``fast_post`` gets a fast path."""
    context = getattr(getattr(getattr(interface, "_ctx", None), "token_manager", None), "context", None)
    resource = getattr(context, "serversite", None)
    return FastPath(interface, resource, CITY_TUNING) if hasattr(resource, "fast_post") else None


def fast_paths(context) -> list[FastPath]:
    """The fast paths of a context's udp6 interfaces (for counters)."""
    found = []
    for token_manager in context.request_interfaces:
        interface = getattr(getattr(token_manager, "token_interface", None), "message_interface", None)
        fast = getattr(interface, "__dict__", {}).get("_fleet_fast_path")
        if isinstance(fast, FastPath):
            found.append(fast)
    return found


READS_PER_WAKEUP = 64
_recvmsg_transport = recvmsg.RecvmsgSelectorDatagramTransport


def _read_ready(self):
    """RecvmsgSelectorDatagramTransport._read_ready draining up to READS_PER_WAKEUP datagrams.

    aiocoap reads one datagram per wakeup and polls the error queue before each; under load
    that is an event-loop turn and a failing syscall per request. The error queue is still
    polled on every wakeup, so ICMP errors arrive as before.
    """
    sock = self._RecvmsgSelectorDatagramTransport__sock
    if socknumbers.HAS_RECVERR:
        try:
            data, ancdata, flags, addr = sock.recvmsg(self.max_size, 1024, socknumbers.MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._protocol.error_received(exc)
        else:
            self._protocol.datagram_errqueue_received(data, ancdata, flags, addr)
    for _ in range(READS_PER_WAKEUP):
        sock = self._RecvmsgSelectorDatagramTransport__sock
        if sock is None:  # closed by what the last datagram set off
            return
        try:
            data, ancdata, flags, addr = sock.recvmsg(self.max_size, 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        self._protocol.datagram_msg_received(data, ancdata, flags, addr)


class _ExchangesByRemote(dict):
    """MessageManager._active_exchanges ({(remote, mid): ...}) that also counts per remote.

    aiocoap scans every active exchange on each ACK to see whether the acknowledging peer has
    another one running (`_continue_backlog`): quadratic once thousands of CONs are out, as
    after a registration storm (a /3/0 read per device) or a commit stall (separate responses).
    """

    def __init__(self) -> None:
        super().__init__()
        self.per_remote: collections.Counter = collections.Counter()

    def __setitem__(self, key, value) -> None:
        if key not in self:
            self.per_remote[key[0]] += 1
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self._forget(key[0])

    def pop(self, key, *default):
        if key in self:
            self._forget(key[0])
        return super().pop(key, *default)

    def _forget(self, remote) -> None:
        left = self.per_remote[remote] - 1
        if left:
            self.per_remote[remote] = left
        else:
            del self.per_remote[remote]


_original_manager_init = messagemanager.MessageManager.__init__
_original_continue_backlog = messagemanager.MessageManager._continue_backlog


_original_send_message = messagemanager.MessageManager.send_message
_original_next_message_id = messagemanager.MessageManager._next_message_id


def _send_message(self, message, messageerror_monitor=None):
    """MessageManager.send_message, telling `_next_message_id` whom the message is for."""
    self._fleet_remote = message.remote
    try:
        return _original_send_message(self, message, messageerror_monitor)
    finally:
        self._fleet_remote = None


def _next_message_id(self):
    """The message ID from the outbound fast path's counter for the device being sent to, so
    that aiocoap's messages and ours never share an ID (aiocoap counts one sequence for all)."""
    outbound = getattr(getattr(self, "message_interface", None), "__dict__", {}).get("_fleet_outbound")
    sockaddr = getattr(getattr(self, "_fleet_remote", None), "sockaddr", None)
    if outbound is not None and sockaddr is not None:
        return outbound.next_mid(sockaddr)
    return _original_next_message_id(self)


def _manager_init(self, token_manager) -> None:
    _original_manager_init(self, token_manager)
    self._active_exchanges = _ExchangesByRemote()


def _continue_backlog(self, remote) -> None:
    """MessageManager._continue_backlog with the per-remote count instead of the scan."""
    exchanges = self._active_exchanges
    if not isinstance(exchanges, _ExchangesByRemote):
        return _original_continue_backlog(self, remote)
    if remote not in self._backlogs:
        raise AssertionError("backlogs/active_exchange relation violated (implementation error)")
    while remote not in exchanges.per_remote:
        if self._backlogs[remote]:
            next_message, messageerror_monitor = self._backlogs[remote].pop(0)
            self._send_initially(next_message, messageerror_monitor)
        else:
            del self._backlogs[remote]
            break


def bound_udp_socket(address: tuple) -> socket.socket:
    """A dual-stack UDP socket bound to `address` (an AF_INET6 sockaddr) as udp6 binds its own:
    peers' addresses look the same ('::ffff:1.2.3.4', port, 0, 0), SO_REUSEPORT so several
    listeners (processes, nodes) share the port, and a receive buffer sized for bursts."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # The local address of each datagram: aiocoap wants it, and answers leave from it.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


# A socket bound elsewhere (the node's supervisor, api.node) that the next udp6 server endpoint
# created in this context uses instead of binding one.
_inherited_socket: contextvars.ContextVar[socket.socket | None] = contextvars.ContextVar(
    "fleet_inherited_udp_socket", default=None)
_original_create_server = udp6.MessageInterfaceUDP6.create_server_transport_endpoint.__func__


@contextlib.contextmanager
def inherited(sock: socket.socket | None) -> Iterator[None]:
    """Within the block, aiocoap's udp6 server endpoint is `sock` (None: it binds as usual)."""
    token = _inherited_socket.set(sock)
    try:
        yield
    finally:
        _inherited_socket.reset(token)


async def _create_server_transport_endpoint(cls, ctx, log, loop, bind, multicast):
    """MessageInterfaceUDP6.create_server_transport_endpoint on an inherited socket if any."""
    sock = _inherited_socket.get()
    if sock is None:
        return await _original_create_server(cls, ctx, log, loop, bind, multicast)
    sock.setblocking(False)
    return await cls._create_transport_endpoint(sock, ctx, log, loop, multicast)


def install() -> None:
    """Patch aiocoap's udp6 transport once per process (idempotent)."""
    if getattr(udp6.MessageInterfaceUDP6, "_fleet_patched", False):
        return
    udp6.MessageInterfaceUDP6.create_server_transport_endpoint = classmethod(_create_server_transport_endpoint)
    udp6.MessageInterfaceUDP6.datagram_msg_received = _datagram_msg_received
    udp6.MessageInterfaceUDP6.datagram_errqueue_received = _datagram_errqueue_received
    # The remote a datagram's request gets; protocols.coap.secure's interface makes coaps ones.
    udp6.MessageInterfaceUDP6._fleet_remote_type = udp6.UDP6EndpointAddress
    _recvmsg_transport._read_ready = _read_ready
    messagemanager.MessageManager.__init__ = _manager_init
    messagemanager.MessageManager._continue_backlog = _continue_backlog
    messagemanager.MessageManager.send_message = _send_message
    messagemanager.MessageManager._next_message_id = _next_message_id
    udp6.MessageInterfaceUDP6._fleet_patched = True


def udp_interface(context):
    """The listener's plain (coap://) udp6 message interface, to address devices by socket
    address; the coaps one is protocols.coap.secure.secure_interface."""
    for token_manager in context.request_interfaces:
        interface = getattr(getattr(token_manager, "token_interface", None), "message_interface", None)
        if isinstance(interface, udp6.MessageInterfaceUDP6) and not interface.__dict__.get("_fleet_secure"):
            return interface
    return None


def udp_sockets(context) -> list[socket.socket]:
    found = []
    for token_manager in context.request_interfaces:
        interface = getattr(getattr(token_manager, "token_interface", None), "message_interface", None)
        transport = getattr(interface, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            found.append(sock)
    return found


def enlarge_receive_buffer(context) -> None:
    """Bursts of thousands of devices overflow the default 208 KiB socket buffer."""
    for sock in udp_sockets(context):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
