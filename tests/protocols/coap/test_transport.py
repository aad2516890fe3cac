"""aiocoap patches in protocols.coap.transport that have no wire behaviour of their own."""

from __future__ import annotations

import random

from protocols.coap.transport import MalformedPeers, _ExchangesByRemote


def test_exchange_count_per_remote_matches_a_scan():
    exchanges = _ExchangesByRemote()
    rng = random.Random(7)
    remotes = ["a", "b", "c"]
    for _ in range(2000):
        key = (rng.choice(remotes), rng.randrange(20))
        action = rng.random()
        if action < 0.5:
            exchanges[key] = object()
        elif action < 0.8:
            exchanges.pop(key, None)
        elif key in exchanges:
            del exchanges[key]
        for remote in remotes:
            scanned = sum(1 for r, _ in exchanges if r == remote)
            assert exchanges.per_remote.get(remote, 0) == scanned


def test_a_malformed_peer_is_worth_one_warning_per_window():
    peers = MalformedPeers()
    assert peers.first("192.0.2.1")
    assert not peers.first("192.0.2.1")
    assert peers.first("192.0.2.2")
    peers.until["192.0.2.1"] = 0.0  # its window has passed
    assert peers.first("192.0.2.1")


def test_malformed_peers_are_bounded():
    peers = MalformedPeers()
    peers.MAX_HOSTS = 3
    assert all(peers.first(f"192.0.2.{n}") for n in range(3))
    assert not peers.first("192.0.2.9")  # full of live windows: quiet rather than unbounded
    assert len(peers.until) == 3
