"""Which hosts misbehaved lately, so that each is worth one WARNING per window, not one per datagram."""

from __future__ import annotations

import time


class MalformedPeers:
    """Which hosts misbehaved lately (a malformed datagram, a refused DTLS handshake): a
    misbehaving peer is worth one WARNING, not one per datagram (a broken or hostile device
    repeats itself thousands of times)."""

    WINDOW_S = 300.0
    MAX_HOSTS = 10_000

    def __init__(self) -> None:
        self.until: dict[str, float] = {}

    def first(self, host: str) -> bool:
        now = time.monotonic()
        if self.until.get(host, 0.0) > now:
            return False
        if len(self.until) >= self.MAX_HOSTS:
            self.until = {peer: until for peer, until in self.until.items() if until > now}
            if len(self.until) >= self.MAX_HOSTS:
                return False  # a flood from everywhere: the first ones have been said
        self.until[host] = now + self.WINDOW_S
        return True
