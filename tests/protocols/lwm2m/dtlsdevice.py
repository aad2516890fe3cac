"""A device over coaps:// for tests: rawdevice's LwM2M client behind part A's DTLS client, which
also answers the bootstrap interface (Bootstrap-Delete, Bootstrap-Write, Bootstrap-Finish)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from fleet.objectmodel import ResourcePath
from protocols.coap.dtls import PskCredentials, RpkCredentials, open_dtls_endpoint
from protocols.lwm2m import content
from protocols.lwm2m.tlv import decode as decode_tlv
from tests.protocols.lwm2m.rawdevice import (CON, CONTENT_FORMAT, POST, URI_PATH, URI_QUERY, Datagram, RawDevice,
                                             decode, encode, uint)

DELETE, DELETED, CHANGED = 4, 0x42, 0x44


@dataclass
class DtlsDevice(RawDevice):
    """`start_dtls` opens its DTLS session; `handshake_failed` is set if the server refused it.
    Bootstrap writes land in `written` (path -> {resource id: raw bytes}), deletes in `deleted`."""

    written: dict[str, dict[int, bytes]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    handshake_failed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start_dtls(self, port: int, credentials: PskCredentials | RpkCredentials, *,
                         local_port: int | None = None) -> None:
        self.server = ("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        self.transport, _ = await open_dtls_endpoint(
            loop, lambda: _Protocol(self), self.server, credentials,
            local_addr=("127.0.0.1", local_port) if local_port is not None else None)

    async def exchange(self, request: Datagram, timeout_s: float = 10.0) -> Datagram:
        self.transport.sendto(encode(request), self.server)
        async with asyncio.timeout(timeout_s):
            while True:
                reply = await self.replies.get()
                if reply.mid == request.mid:
                    return reply

    async def register_at(self, port: int) -> Datagram:
        """Register on the session already open (RawDevice.register would open a plain socket)."""
        links = self.links or ",".join(sorted({"<" + p.rsplit("/", 1)[0] + ">" for p in self.values}))
        query = [f"ep={self.endpoint}", "lt=300", "b=U", "lwm2m=1.1"]
        return await self.exchange(Datagram(CON, POST, self.mid(), os.urandom(4),
                                            [(URI_PATH, b"rd"), (CONTENT_FORMAT, uint(40)),
                                             *[(URI_QUERY, q.encode()) for q in query]], links.encode()))

    async def request_bootstrap(self) -> Datagram:
        return await self.exchange(Datagram(CON, POST, self.mid(), os.urandom(4),
                                            [(URI_PATH, b"bs"), (URI_QUERY, f"ep={self.endpoint}".encode())], b""))

    async def send(self, payload: bytes, content_format: int = content.SENML_CBOR) -> Datagram:
        """An LwM2M Send (POST /dp), the fast path's kind of request."""
        return await self.exchange(Datagram(CON, POST, self.mid(), os.urandom(4),
                                            [(URI_PATH, b"dp"), (CONTENT_FORMAT, uint(content_format))], payload))

    def answer(self, request: Datagram) -> Datagram | None:
        path = request.path
        if request.code == DELETE:
            self.requests.append(request)
            self.deleted.append(path)
            return Datagram(2, DELETED, request.mid, request.token, [], b"")
        if request.code == POST and path == "/bs":
            self.requests.append(request)
            self.finished.set()
            return Datagram(2, CHANGED, request.mid, request.token, [], b"")
        if request.code == 3 and path.count("/") == 2 and request.uint(CONTENT_FORMAT) == content.LWM2M_TLV:
            self.requests.append(request)
            self.written[path] = {at.resource: raw for at, raw in decode_tlv(request.payload, ResourcePath.parse(path))}
            return Datagram(2, CHANGED, request.mid, request.token, [], b"")
        return super().answer(request)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, device: DtlsDevice) -> None:
        self.device = device

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, address) -> None:
        message = decode(data)
        if message.mtype in (2, 3):
            self.device.replies.put_nowait(message)
        elif 1 <= message.code < 32 and (reply := self.device.answer(message)) is not None:
            self.transport.sendto(encode(reply), address)

    def error_received(self, exc) -> None:
        self.device.handshake_failed.set()

    def connection_lost(self, exc) -> None:
        if exc is not None:
            self.device.handshake_failed.set()
