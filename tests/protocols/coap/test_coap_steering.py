"""A reuseport group steered by source port: slot `port % slots` gets every datagram of a peer,
over IPv4 (on dual-stack sockets) and IPv6, whatever the kernel's hash would have chosen."""

from __future__ import annotations

import select
import socket

import pytest

from protocols.coap.steering import steer_by_source_port

SLOTS = 3


@pytest.fixture
def group():
    sockets, port = [], 0
    try:
        for _ in range(SLOTS):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("::", port))
            port = sock.getsockname()[1]
            sockets.append(sock)
        steer_by_source_port(sockets[0], SLOTS)
        yield port, sockets
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_each_peer_reaches_the_slot_its_source_port_names(group, family, host):
    port, sockets = group
    for _ in range(2 * SLOTS):
        with socket.socket(family, socket.SOCK_DGRAM) as peer:
            peer.bind((host, 0))
            peer.sendto(b"hello", (host, port))
            readable, _, _ = select.select(sockets, [], [], 5)
            assert [sockets.index(sock) for sock in readable] == [peer.getsockname()[1] % SLOTS]
            readable[0].recv(16)


# A destination options header of 8 bytes (next header and length filled in by the kernel; one
# PadN option), and a hop-by-hop one the same way: what a peer's stack may add to its datagrams.
PADDED_OPTIONS = b"\x00\x00\x01\x04\x00\x00\x00\x00"


@pytest.mark.parametrize("headers", [(socket.IPV6_DSTOPTS,), (socket.IPV6_HOPOPTS, socket.IPV6_DSTOPTS)])
def test_ipv6_extension_headers_do_not_hide_the_source_port(group, headers):
    port, sockets = group
    for _ in range(2 * SLOTS):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as peer:
            try:
                for header in headers:
                    peer.setsockopt(socket.IPPROTO_IPV6, header, PADDED_OPTIONS)
            except PermissionError:
                pytest.skip("extension headers need CAP_NET_RAW")
            peer.bind(("::1", 0))
            peer.sendto(b"hello", ("::1", port))
            readable, _, _ = select.select(sockets, [], [], 5)
            assert [sockets.index(sock) for sock in readable] == [peer.getsockname()[1] % SLOTS]
            readable[0].recv(16)
