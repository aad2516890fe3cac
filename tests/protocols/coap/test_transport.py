"""aiocoap patches in protocols.coap.transport that have no wire behaviour of their own."""

from __future__ import annotations

import random

from protocols.coap.transport import _ExchangesByRemote


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
