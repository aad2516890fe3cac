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

_LD, _LDX, _ST, _ALU, _JMP, _RET, _MISC = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07
_B, _H = 0x10, 0x08
_IMM, _ABS, _IND, _MEM, _MSH = 0x00, 0x20, 0x40, 0x60, 0xA0
_ADD, _LSH, _RSH, _MOD = 0x00, 0x60, 0x70, 0x90
_JA, _JEQ = 0x00, 0x10
_K, _X, _A = 0x00, 0x08, 0x10
_TAX = 0x00
UDP = 17
# IPv6 extension headers a datagram may carry before its UDP header, each with its length in
# its second byte (8-byte units past the first 8): hop-by-hop, routing, destination options.
# (A fragment header is gone by then: the kernel reassembles before UDP.)
_EXTENSION_HEADERS = (0, 43, 60)
# How many of them the program steps over (it has no loops); more is rare enough to leave to
# the kernel's hash (the "unknown" label of `program`).
MAX_EXTENSION_HEADERS = 4


def _instruction(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _assemble(lines: list) -> bytes:
    """Instructions (code, jt, jf, k) and labels (str) between them; a jump's jt/jf (or a JA's
    k) may name a label: classic BPF jumps forward only, by an offset from the next instruction."""
    where: dict[str, int] = {}
    code = []
    for line in lines:
        if isinstance(line, str):
            where[line] = len(code)
        else:
            code.append(line)

    def offset(target, at: int) -> int:
        return where[target] - at - 1 if isinstance(target, str) else target

    return b"".join(_instruction(op, offset(jt, n), offset(jf, n), offset(k, n) if op == _JMP | _JA else k)
                    for n, (op, jt, jf, k) in enumerate(code))


def program(slots: int) -> bytes:
    """The source port of an IPv4 (IPv4-mapped on a dual-stack socket) or IPv6 datagram, modulo
    `slots`: the index of the group's socket that gets it. Past IPv6 extension headers (up to
    MAX_EXTENSION_HEADERS); a datagram whose UDP header it cannot find gets `slots`, an index out
    of the group, for which the kernel picks by its own hash (the peer keeps reaching one socket,
    only not the one its port names)."""
    lines: list = [
        (_LD | _B | _ABS, 0, 0, SKF_NET_OFF),              # A = the IP header's first byte
        (_ALU | _RSH | _K, 0, 0, 4),                       # its version
        (_JMP | _JEQ | _K, 0, "ipv6", 4),
        (_LDX | _B | _MSH, 0, 0, SKF_NET_OFF),             # IPv4: X = its header's length
        (_JMP | _JA, 0, 0, "port"),
        "ipv6",
        (_LDX | _IMM, 0, 0, 40),                           # X = past the fixed header
        (_LD | _B | _ABS, 0, 0, SKF_NET_OFF + 6),          # A = its next header
    ]
    for n in range(MAX_EXTENSION_HEADERS):
        extension = f"extension-{n}"
        lines += [(_JMP | _JEQ | _K, "port", 0, UDP)]
        lines += [(_JMP | _JEQ | _K, extension, 0, kind) for kind in _EXTENSION_HEADERS[:-1]]
        lines += [(_JMP | _JEQ | _K, 0, "unknown", _EXTENSION_HEADERS[-1]),
                  extension,
                  (_LD | _B | _IND, 0, 0, SKF_NET_OFF),        # A = the next header after it
                  (_ST, 0, 0, 0),                              # kept in M[0]
                  (_LD | _B | _IND, 0, 0, SKF_NET_OFF + 1),    # its length: (A + 1) * 8
                  (_ALU | _ADD | _K, 0, 0, 1),
                  (_ALU | _LSH | _K, 0, 0, 3),
                  (_ALU | _ADD | _X, 0, 0, 0),
                  (_MISC | _TAX, 0, 0, 0),                     # X = past it
                  (_LD | _MEM, 0, 0, 0)]
    lines += [
        (_JMP | _JEQ | _K, 0, "unknown", UDP),
        "port",
        (_LD | _H | _IND, 0, 0, SKF_NET_OFF),              # A = the UDP source port, at X
        (_ALU | _MOD | _K, 0, 0, slots),
        (_RET | _A, 0, 0, 0),
        "unknown",
        (_RET | _K, 0, 0, slots),
    ]
    return _assemble(lines)


def steer_by_source_port(sock: socket.socket, slots: int) -> None:
    """Attach the program to the reuseport group `sock` is in (once for the group, once all
    `slots` sockets are bound, in slot order)."""
    instructions = program(slots)
    code = ctypes.create_string_buffer(instructions)  # kept alive through the call
    fprog = struct.pack("HL", len(instructions) // 8, ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)

