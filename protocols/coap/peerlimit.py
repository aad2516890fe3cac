"""A limit on datagrams per CoAP peer, so one chatty or hostile peer cannot starve the others.

Checked for every datagram before aiocoap or the fast path sees it (notifications are
counted; excepted are answers the outbound path takes, and firmware blocks served from memory
for a download token this node knows to be valid, see protocols.coap.fastpath): two dict
lookups and a little arithmetic, one bucket per peer (address and port) and a looser one per
address, at most `max_peers` of each.
A request over the limit gets a piggybacked 5.03 with Max-Age (when it may send again) and,
when that is no longer than the request, a short diagnostic; anything else is dropped.
"""

from __future__ import annotations

import math

import structlog

from fleet.access.limits import Rate, TokenBuckets
from fleet.settings import CoapSettings
from protocols.coap import message

log = structlog.get_logger("fleet.coap")

DEFAULT_PEER_RATE = CoapSettings().peer_rate
DEFAULT_ADDRESS_RATE = CoapSettings().address_rate
_DIAGNOSTIC = b"rate limited"


def service_unavailable(data: bytes, max_age_s: int) -> bytes | None:
    """A piggybacked 5.03 with Max-Age for a CON request whose header and token we can read."""
    try:
        mtype, code, mid, token = message.decode_header(data)
    except message.MessageFormatError:
        return None
    if mtype != message.CON or not message.is_request(code):
        return None
    options = message.encode_options([(message.MAX_AGE, message.uint(max_age_s))])
    reply = message.encode_with_options(message.ACK, message.SERVICE_UNAVAILABLE, mid, token, options)
    # Never more bytes out than came in: a flood with a forged source must not be amplified.
    with_diagnostic = reply + b"\xff" + _DIAGNOSTIC
    return with_diagnostic if len(with_diagnostic) <= len(data) else reply


class PeerLimit:
    def __init__(self, rate: Rate, address_rate: Rate = Rate(0, 0), *, max_peers: int = 100_000) -> None:
        self.buckets = TokenBuckets(rate, max_callers=max_peers)
        self.addresses = TokenBuckets(address_rate, max_callers=max_peers)
        # Peers over the limit right now, so each is logged once per episode, not per datagram.
        self._limited: dict[tuple, None] = {}
        self.refused = 0

    def refuse(self, data: bytes, address: tuple, now: float) -> bytes | None | bool:
        """False to let the datagram in; else the reply to send (None: drop it silently)."""
        peer = address[:2]
        wait = self.buckets.take(peer, now) or self.addresses.take(peer[0], now)
        if not wait:
            if self._limited:
                self._limited.pop(peer, None)
            return False
        self.refused += 1
        if peer not in self._limited:
            if len(self._limited) >= 10_000:
                self._limited.clear()
            self._limited[peer] = None
            log.warning("CoAP peer over its rate limit; answering 5.03", peer=peer[0], port=peer[1])
        return service_unavailable(data, max(1, math.ceil(wait)))
