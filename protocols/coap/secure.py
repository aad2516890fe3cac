"""The coaps:// listener: a DTLS socket whose plaintext runs through the same udp6 pipeline as coap://.

The listener is one more udp6 message interface in the aiocoap server context, whose
`transport` is a shim: what aiocoap, the fast paths (protocols.coap.fastpath) and the outbound
requests (protocols.coap.outbound) send through `transport.sendmsg` is encrypted for that
peer's session (protocols.coap.dtls.DtlsServer.send), and every decrypted datagram goes into
protocols.coap.transport's patched `datagram_msg_received`, as a plain datagram would. So
malformed replies, peer limits, deduplication and dispatch are the same code on both schemes.
Requests arriving here carry a SecureEndpointAddress: scheme "coaps", and
`authenticated_claims == [PeerIdentity]` of the session it came in on.

The server cannot open a session towards a device (DTLS is the device's to start): requests
to a device go to the address of the session it opened, and fail at once (ENOTCONN) without one.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass

import aiocoap
import structlog
from aiocoap.messagemanager import MessageManager
from aiocoap.tokenmanager import TokenManager
from aiocoap.transports import udp6
from aiocoap.util import hostportjoin
from aiocoap.util.asyncio.recvmsg import create_recvmsg_datagram_endpoint

from fleet import metrics
from protocols.coap import transport
from protocols.coap.dtls import DeviceKeys, DtlsServer

log = structlog.get_logger("fleet.coap")

COAPS_PORT = 5684


class SecureEndpointAddress(udp6.UDP6EndpointAddress):
    """A peer reached through the coaps listener: who it proved to be is taken when the address
    is made (for a request, the session its datagram was decrypted in)."""

    scheme = "coaps"

    def __init__(self, sockaddr, interface, *, pktinfo=None):
        super().__init__(sockaddr, interface, pktinfo=pktinfo)
        identity = interface._fleet_dtls.identity_of(sockaddr)
        self._claims = [identity] if identity is not None else []
        self._who = (identity.mode, identity.identity) if identity is not None else None  # DtlsServer.who

    authenticated_claims = property(lambda self: self._claims)

    def __eq__(self, other):
        # Never equal to the plain address of the same host and port: another peer entirely.
        # Nor to the same address authenticated as someone else: an address changes hands (a
        # session ends, another device's handshake comes from that host and port, as behind a
        # NAT), and aiocoap matches duplicates and responses by remote, so the second device
        # would be answered from the first one's exchanges, and could answer requests meant
        # for it. The same identity (its session renewed) is the same peer.
        return type(other) is type(self) and self.sockaddr[:-1] == other.sockaddr[:-1] and self._who == other._who

    __hash__ = udp6.UDP6EndpointAddress.__hash__

    @property
    def hostinfo(self):
        port = self.sockaddr[1]
        return hostportjoin(self._plainaddress(), None if port == COAPS_PORT else port)

    @property
    def hostinfo_local(self):
        port = self.interface._local_port()
        return hostportjoin(self._plainaddress_local(), None if port == COAPS_PORT else port)

    @property
    def uri_base(self):
        return "coaps://" + self.hostinfo

    @property
    def uri_base_local(self):
        return "coaps://" + self.hostinfo_local


class SecureInterface(udp6.MessageInterfaceUDP6):
    """The coaps listener's message interface (`_fleet_secure` is set on each instance)."""

    _fleet_remote_type = SecureEndpointAddress

    async def determine_remote(self, request):
        # Requests to devices over coaps are addressed by remote (a SecureEndpointAddress of a
        # session the device opened); a URI alone cannot open one.
        return None


class _DtlsShim:
    """The interface's `transport`: sendmsg encrypts for the addressed peer's session."""

    def __init__(self, server: DtlsServer, interface: SecureInterface) -> None:
        self.server = server
        self.interface = interface
        self.udp = None
        self.unsendable = 0

    def sendmsg(self, data, ancdata, flags, address) -> None:
        # What aiocoap sends to a remote goes only to the session of the peer that remote was
        # authenticated as (requests to a device, retransmissions), never to whoever holds
        # that address now; the fast paths' answers leave right after the datagram they answer,
        # and the outbound requests check it themselves (protocols.coap.outbound).
        remote = self.interface._remote_being_sent_to.get()
        if self.server.send(data, address, getattr(remote, "_who", None)):
            return
        # No session (never opened, evicted, closed): fail what waits for this peer at once,
        # as an ICMP error would, rather than retransmitting into nothing. Deferred: the
        # sender may not have registered the exchange yet.
        self.unsendable += 1
        error = OSError(errno.ENOTCONN, "no DTLS session with this peer")
        loop = self.interface.loop
        if remote is not None:
            loop.call_soon(self._dispatch_error, error, remote)
        outbound = self.interface.__dict__.get("_fleet_outbound")
        if outbound is not None:
            loop.call_soon(outbound.unreachable, address, error)

    def _dispatch_error(self, error: OSError, remote) -> None:
        if self.interface._shutting_down is None:
            self.interface._ctx.dispatch_error(error, remote)

    def get_extra_info(self, name, default=None):
        return self.udp.get_extra_info(name, default) if self.udp is not None else default

    def close(self) -> None:
        self.server.close()
        self.interface.loop.call_soon(self.interface.connection_lost, None)


@dataclass
class SecureListener:
    context: aiocoap.Context
    server: DtlsServer
    interface: SecureInterface
    port: int
    _token_manager: TokenManager

    async def close(self) -> None:
        """Close every session (close_notify) and the socket. context.shutdown() does it too."""
        if self._token_manager in self.context.request_interfaces:
            self.context.request_interfaces.remove(self._token_manager)
            await self._token_manager.shutdown()


def secure_interface(context) -> SecureInterface | None:
    """The context's coaps message interface, or None."""
    for token_manager in context.request_interfaces:
        interface = getattr(getattr(token_manager, "token_interface", None), "message_interface", None)
        if isinstance(interface, udp6.MessageInterfaceUDP6) and interface.__dict__.get("_fleet_secure"):
            return interface
    return None


async def open_coaps(context: aiocoap.Context, host: str, port: int, keys: DeviceKeys, server_key,
                     sock: socket.socket | None = None, **limits) -> SecureListener:
    """Listen for coaps on (host, port) inside `context`, beside its plain udp6 interface.

    `keys` answers the handshakes (protocols.coap.dtls.DeviceKeys); `server_key` is the P-256
    key the server presents to raw-public-key devices (None: PSK only); `limits` go to
    DtlsServer (max_peers, idle_s, handshakes_per_s, psk_handshakes_per_s, handshake_timeout_s, source_share).
    `sock`: a socket bound already (transport.bound_udp_socket; the node's supervisor hands
    its workers theirs), used instead of binding (host, port). The plain interface's peer
    limit, if any, holds here too."""
    transport.install()
    loop = asyncio.get_running_loop()
    if sock is None:
        # Dual-stack like udp6, so that peers' addresses look the same ('::ffff:1.2.3.4', port, 0, 0).
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET6, type=socket.SOCK_DGRAM,
                                       flags=socket.AI_V4MAPPED)
        sock = transport.bound_udp_socket(infos[0][4])
    sock.setblocking(False)

    token_manager = TokenManager(context)
    message_manager = MessageManager(token_manager)
    interface = SecureInterface(message_manager, log=context.log, loop=loop)
    interface._fleet_secure = True
    deliver = interface.datagram_msg_received  # the patched udp6 pipeline (protocols.coap.transport)
    server = DtlsServer(keys, server_key, on_plaintext=lambda data, address: deliver(data, server.ancdata, 0, address),
                        **limits)
    interface._fleet_dtls = server
    shim = _DtlsShim(server, interface)
    # aiocoap's recvmsg transport: transport.install() makes it drain many datagrams per wakeup.
    shim.udp, _ = await create_recvmsg_datagram_endpoint(loop, lambda: server, sock)
    interface.connection_made(shim)
    message_manager.message_interface = interface
    token_manager.token_interface = message_manager
    context.request_interfaces.append(token_manager)
    plain = transport.udp_interface(context)
    peer_limit = plain.__dict__.get("_fleet_peer_limit") if plain is not None else None
    if peer_limit is not None:
        interface._fleet_peer_limit = peer_limit
    metrics.follow_coaps(server)
    bound_port = sock.getsockname()[1]
    log.info("coaps listener ready", host=host, port=bound_port, rpk=server_key is not None)
    return SecureListener(context, server, interface, bound_port, token_manager)
