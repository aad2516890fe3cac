"""Which of a port's SO_REUSEPORT sockets a peer's datagrams reach: the one its source port names.

The kernel's own choice hashes the peer's address with a secret, so no process can tell which
of a node's workers a device talks to. A worker that sends to a device it did not hear from
(one it takes over from a stopped node) would send from the shared port, and the device's
answer would reach whichever socket the hash picks: most often another worker's, which knows
nothing of the exchange. With this program attached to the group, the socket of slot
`source port % slots` (slots in the order they joined the group) gets every datagram of a
peer, which the process in that slot can tell from the port a device registered from
(fleet.commands.repository: a worker adopts and claims for the devices of its slot).
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h (not in Python's socket module)
# Classic BPF loads relative to the network header (linux/filter.h): the program runs with the
# data past the UDP header, which only this base reaches back over.
SKF_NET_OFF = -0x100000

_LD, _LDX, _ALU, _JMP, _RET = 0x00, 0x01, 0x04, 0x05, 0x06
_B, _H = 0x10, 0x08
_ABS, _IND, _MSH = 0x20, 0x40, 0xA0
_RSH, _MOD, _JEQ, _JA, _K, _A = 0x70, 0x90, 0x10, 0x00, 0x00, 0x10


def _instruction(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def program(slots: int) -> bytes:
    """The source port of an IPv4 (IPv4-mapped on a dual-stack socket) or IPv6 datagram, modulo
    `slots`: the index of the group's socket that gets it."""
    return b"".join([
        _instruction(_LD | _B | _ABS, 0, 0, SKF_NET_OFF),        # A = the IP header's first byte
        _instruction(_ALU | _RSH | _K, 0, 0, 4),                 # its version
        _instruction(_JMP | _JEQ | _K, 0, 3, 4),                 # IPv4, else to IPv6
        _instruction(_LDX | _B | _MSH, 0, 0, SKF_NET_OFF),       # X = IPv4 header length
        _instruction(_LD | _H | _IND, 0, 0, SKF_NET_OFF),        # A = UDP source port
        _instruction(_JMP | _JA, 0, 0, 1),
        _instruction(_LD | _H | _ABS, 0, 0, SKF_NET_OFF + 40),   # IPv6: after its fixed header
        _instruction(_ALU | _MOD | _K, 0, 0, slots),
        _instruction(_RET | _A, 0, 0, 0),
    ])


def steer_by_source_port(sock: socket.socket, slots: int) -> None:
    """Attach the program to the reuseport group `sock` is in (once for the group, once all
    `slots` sockets are bound, in slot order)."""
    instructions = program(slots)
    code = ctypes.create_string_buffer(instructions)  # kept alive through the call
    fprog = struct.pack("HL", len(instructions) // 8, ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)

