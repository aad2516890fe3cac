"""An LwM2M client written from the specifications on a bare UDP socket, sharing no code with Fleet.

It speaks only the content formats it is given (answering 4.06 Not Acceptable to any other
Accept), records every request it receives, keeps observations by token, and can notify with
a token of its choice, like the independently written clients Fleet meets in the field.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import struct
from dataclasses import dataclass, field

CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT = 1, 2, 3
CONTENT, CHANGED, CREATED, NOT_FOUND, NOT_ACCEPTABLE = 0x45, 0x44, 0x41, 0x84, 0x86
OBSERVE, URI_PATH, CONTENT_FORMAT, URI_QUERY, ACCEPT, LOCATION_PATH = 6, 11, 12, 15, 17, 8
TEXT, LINK_FORMAT, SENML_JSON, TLV = 0, 40, 110, 11542


@dataclass
class Datagram:
    mtype: int
    code: int
    mid: int
    token: bytes
    options: list[tuple[int, bytes]]
    payload: bytes

    def option(self, number: int) -> bytes | None:
        return next((value for n, value in self.options if n == number), None)

    def uint(self, number: int) -> int | None:
        value = self.option(number)
        return None if value is None else int.from_bytes(value, "big")

    def strings(self, number: int) -> list[str]:
        return [value.decode() for n, value in self.options if n == number]

    @property
    def path(self) -> str:
        return "/" + "/".join(self.strings(URI_PATH))


def encode(d: Datagram) -> bytes:
    out = bytearray([0x40 | d.mtype << 4 | len(d.token), d.code]) + struct.pack("!H", d.mid) + d.token
    previous = 0
    for number, value in sorted(d.options, key=lambda o: o[0]):
        delta, length = number - previous, len(value)
        previous = number
        extra = bytearray()
        nibbles = []
        for part in (delta, length):
            if part < 13:
                nibbles.append(part)
            else:
                nibbles.append(13)
                extra.append(part - 13)
        out += bytes([nibbles[0] << 4 | nibbles[1]]) + extra + value
    if d.payload:
        out += b"\xff" + d.payload
    return bytes(out)


def decode(data: bytes) -> Datagram:
    tkl = data[0] & 0x0F
    mid = struct.unpack("!H", data[2:4])[0]
    token, pos, number, options = data[4:4 + tkl], 4 + tkl, 0, []
    while pos < len(data) and data[pos] != 0xFF:
        delta, length = data[pos] >> 4, data[pos] & 0x0F
        pos += 1
        if delta == 13:
            delta, pos = data[pos] + 13, pos + 1
        if length == 13:
            length, pos = data[pos] + 13, pos + 1
        number += delta
        options.append((number, data[pos:pos + length]))
        pos += length
    payload = data[pos + 1:] if pos < len(data) else b""
    return Datagram((data[0] >> 4) & 3, data[1], mid, token, options, payload)


def uint(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def tlv_resource(resource_id: int, value: object) -> bytes:
    """OMA TLV (TS §7.4.3): one "resource with value" entry."""
    if isinstance(value, str):
        body = value.encode()
    else:
        body = int(value).to_bytes(8 if abs(int(value)) > 2**31 else 4 if abs(int(value)) > 2**15 else 2
                                   if abs(int(value)) > 127 else 1, "big", signed=True)
    kind = 0xC0 | (0x20 if resource_id > 255 else 0)
    identifier = resource_id.to_bytes(2 if resource_id > 255 else 1, "big")
    if len(body) < 8:
        return bytes([kind | len(body)]) + identifier + body
    return bytes([kind | 0x08]) + identifier + bytes([len(body)]) + body


@dataclass
class RawDevice:
    endpoint: str
    speaks: tuple[int, ...]  # content formats it can answer in; the first is its default
    values: dict[str, object] = field(default_factory=dict)  # "/3/0/0" -> "Acme"
    links: str = ""  # the Register payload; by default one link per object instance
    requests: list[Datagram] = field(default_factory=list)
    observers: dict[str, bytes] = field(default_factory=dict)  # path -> token
    replies: asyncio.Queue = field(default_factory=asyncio.Queue)  # ACK/RST to its own CONs
    ignores_deregistration: bool = False  # a client that never answers a GET with Observe=1
    ignores_accept: bool = False  # answers in its own format whatever was asked (RFC 7252 lets it)
    _mids = itertools.count(int.from_bytes(os.urandom(2), "big"))
    _seq = itertools.count(2)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=("127.0.0.1", 0))

    def stop(self) -> None:
        self.transport.close()

    async def register(self, port: int, timeout: float = 5) -> Datagram:
        links = self.links or ",".join(sorted({"<" + p.rsplit("/", 1)[0] + ">" for p in self.values}))
        query = [f"ep={self.endpoint}", "lt=300", "b=U", "lwm2m=1.1"]
        request = Datagram(CON, POST, self.mid(), os.urandom(4),
                           [(URI_PATH, b"rd"), (CONTENT_FORMAT, uint(LINK_FORMAT)),
                            *[(URI_QUERY, q.encode()) for q in query]], links.encode())
        self.server = ("127.0.0.1", port)
        return await self.exchange(request, timeout)

    async def exchange(self, request: Datagram, timeout: float = 5) -> Datagram:
        """The reply to `request`; to a request answered by an empty ACK, the separate response
        that follows with its token (RFC 7252 §5.2.2: a server slow to answer)."""
        self.transport.sendto(encode(request), self.server)
        later = False
        async with asyncio.timeout(timeout):
            while True:
                reply = await self.replies.get()
                if later:
                    if reply.mtype in (CON, NON) and reply.token == request.token:
                        return reply
                elif reply.mid == request.mid:
                    if not (reply.mtype == ACK and reply.code == 0 and 1 <= request.code < 32):
                        return reply
                    later = True

    def mid(self) -> int:
        return next(self._mids) & 0xFFFF

    async def notify(self, path: str, *, token: bytes | None = None, mtype: int = CON) -> Datagram | None:
        """A notification of `path`'s value; the server's ACK or RST (None for an unanswered NON)."""
        token = self.observers[path] if token is None else token
        fmt = self.speaks[0]
        notification = Datagram(mtype, CONTENT, self.mid(), token,
                                [(OBSERVE, uint(next(self._seq))), (CONTENT_FORMAT, uint(fmt))],
                                self.render(path, fmt))
        if mtype == NON:
            self.transport.sendto(encode(notification), self.server)
            try:
                return await asyncio.wait_for(self.replies.get(), 2)
            except TimeoutError:
                return None
        return await self.exchange(notification)

    def render(self, path: str, fmt: int) -> bytes:
        below = {p: v for p, v in self.values.items() if p == path or p.startswith(path + "/")}
        if fmt == TLV:
            return b"".join(tlv_resource(int(p.rsplit("/", 1)[1]), v) for p, v in below.items())
        if fmt == SENML_JSON:
            return json.dumps([{"n": p, ("vs" if isinstance(v, str) else "v"): v}
                               for p, v in below.items()]).encode()
        return str(below[path]).encode()

    def answer(self, request: Datagram) -> Datagram | None:
        self.requests.append(request)
        if self.ignores_deregistration and request.uint(OBSERVE) == 1:
            return None
        reply = Datagram(ACK, CONTENT, request.mid, request.token, [], b"")
        path = request.path
        if request.code == PUT:  # Write-Attributes: the query is all there is
            reply.code = CHANGED
            return reply
        accept = request.uint(ACCEPT)
        if accept == LINK_FORMAT:
            reply.options = [(CONTENT_FORMAT, uint(LINK_FORMAT))]
            reply.payload = ",".join(f"<{p}>" + (";pmin=10;pmax=60" if p == path else "")
                                     for p in self.values if p.startswith(path)).encode()
            return reply
        fmt = self.speaks[0] if accept is None or self.ignores_accept else accept
        single = path.count("/") == 3
        if fmt not in self.speaks or (fmt == TEXT and not single):
            reply.code = NOT_ACCEPTABLE
            return reply
        if not any(p == path or p.startswith(path + "/") for p in self.values):
            reply.code = NOT_FOUND
            return reply
        reply.options = [(CONTENT_FORMAT, uint(fmt))]
        observe = request.uint(OBSERVE)
        if observe == 0:
            self.observers[path] = request.token
            reply.options.append((OBSERVE, uint(1)))
        elif observe == 1 and self.observers.get(path) == request.token:
            del self.observers[path]  # RFC 7641 §3.6: deregistered
        reply.payload = self.render(path, fmt)
        return reply


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, device: RawDevice) -> None:
        self.device = device

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, address) -> None:
        message = decode(data)
        if message.mtype in (ACK, RST):
            self.device.replies.put_nowait(message)
        elif 1 <= message.code < 32:
            if (reply := self.device.answer(message)) is not None:
                self.transport.sendto(encode(reply), address)
        elif message.code >= 64:  # a separate response
            if message.mtype == CON:
                self.transport.sendto(encode(Datagram(ACK, 0, message.mid, b"", [], b"")), address)
            self.device.replies.put_nowait(message)
