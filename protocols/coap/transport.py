"""How Fleet runs aiocoap's udp6 transport: malformed datagrams answered, exchange state bounded.

aiocoap drops datagrams it cannot parse without a word; a device developer then sees only
timeouts. We answer a confirmable request whose header is readable with 4.00 and a short
diagnostic, and keep aiocoap's handling for everything else.
"""

from __future__ import annotations

import socket
import struct

import structlog
from aiocoap import error
from aiocoap.message import Direction, Message
from aiocoap.numbers.constants import TransportTuning
from aiocoap.transports import udp6

log = structlog.get_logger("fleet.coap")

RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
_CON, _ACK = 0, 2
_BAD_REQUEST = (4 << 5) | 0  # 4.00


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


def diagnose(data: bytes) -> str:
    """Why aiocoap could not parse this datagram, in a few words."""
    if len(data) < 4:
        return "shorter than a CoAP header"
    if data[0] >> 6 != 1:
        return "CoAP version must be 1"
    if data[0] & 0x0F > 8:
        return "token length above 8"
    return "malformed options or payload marker"


def bad_request_reply(data: bytes, diagnostic: str) -> bytes | None:
    """A piggybacked 4.00 for a CON request whose header and token we can read, else None."""
    if len(data) < 4 or data[0] >> 6 != 1:
        return None
    mtype, token_length = (data[0] >> 4) & 0x03, data[0] & 0x0F
    code = data[1]
    if mtype != _CON or token_length > 8 or len(data) < 4 + token_length or not 1 <= code < 32:
        return None
    header = bytes([0x40 | (_ACK << 4) | token_length, _BAD_REQUEST]) + data[2:4]
    return header + data[4:4 + token_length] + b"\xff" + diagnostic.encode()


def _datagram_msg_received(self, data, ancdata, flags, address):
    """udp6.MessageInterfaceUDP6.datagram_msg_received with malformed-input replies (aiocoap 0.4)."""
    pktinfo = None
    for cmsg_level, cmsg_type, cmsg_data in ancdata:
        if cmsg_level == socket.IPPROTO_IPV6 and cmsg_type == socket.IPV6_PKTINFO:
            pktinfo = cmsg_data
    try:
        message = Message.decode(data, udp6.UDP6EndpointAddress(address, self, pktinfo=pktinfo))
        if data[0] & 0x0F > 8:
            raise error.UnparsableMessage("token length above 8")
    except (error.UnparsableMessage, ValueError, struct.error, IndexError):
        diagnostic = diagnose(data)
        log.warning("malformed CoAP datagram", peer=address[0], port=address[1], problem=diagnostic)
        reply = bad_request_reply(data, "malformed CoAP: " + diagnostic)
        if reply is not None:
            self.transport.sendmsg(reply, [], 0, address)
        return
    message.direction = Direction.INCOMING
    message.transport_tuning = CITY_TUNING
    try:
        self._ctx.dispatch_message(message)
    except BaseException as exc:
        self.log.error("Exception raised through dispatch_message: %s", exc, exc_info=exc)
        raise


def install() -> None:
    """Patch aiocoap's udp6 transport once per process (idempotent)."""
    if getattr(udp6.MessageInterfaceUDP6, "_fleet_patched", False):
        return
    udp6.MessageInterfaceUDP6.datagram_msg_received = _datagram_msg_received
    udp6.MessageInterfaceUDP6._fleet_patched = True


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
