"""The client engine (devices, simulators, the bench) and open_dtls_endpoint, shaped like
loop.create_datagram_endpoint."""

from __future__ import annotations

import asyncio
import collections
import ctypes
import time
from collections.abc import Callable

from protocols.coap.dtls.identity import DtlsError, PskCredentials, RpkCredentials, public_key_xy
from protocols.coap.dtls.tinydtls import (
    _ALERT_CLOSE_NOTIFY, _ALERT_FATAL, _BAD_CERTIFICATE, _DECRYPT_ERROR, _EVENT_CONNECTED, _PSK_IDENTITY,
    _PSK_KEY, ECDHE_ECDSA_AES_128_CCM_8, PSK_AES_128_CCM_8, _Engine, _session_for)


class DtlsClient(_Engine):
    """The client side of one DTLS session (a device, a simulator, the bench), PSK or RPK."""

    def __init__(self, credentials: PskCredentials | RpkCredentials, remote, *,
                 send: Callable[[bytes], None], on_plaintext: Callable[[bytes], None],
                 on_connected: Callable[[], None], on_failed: Callable[[DtlsError], None]) -> None:
        self.credentials = credentials
        if isinstance(credentials, PskCredentials):
            self.suites = (PSK_AES_128_CCM_8,)
            own_key = None
            self._trusted = None
        else:
            self.suites = (ECDHE_ECDSA_AES_128_CCM_8,)
            own_key = credentials.private_key
            self._trusted = public_key_xy(credentials.server_public_key)
        super().__init__(own_key)
        self._send, self._on_plaintext = send, on_plaintext
        self._on_connected, self._on_failed = on_connected, on_failed
        self._session = _session_for(remote)
        self._pointer = ctypes.addressof(self._session)
        self.connected = False
        self.failed: DtlsError | None = None

    def connect(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._lib.dtls_connect(self._ctx, self._pointer) < 0:
            self._failed(DtlsError("tinydtls could not start the handshake"))
        self._schedule_retransmit(loop)

    def datagram(self, data: bytes, loop: asyncio.AbstractEventLoop) -> None:
        if not self._ctx:
            return
        result = self._handle(self._pointer, data)
        if not self._ctx:
            return  # closed by a callback (the protocol's datagram_received) meanwhile
        if self.failed is None and not self._lib.dtls_get_peer(self._ctx, self._pointer):
            # tinydtls refused the handshake itself (it sent the alert, so no event says so)
            self._failed(DtlsError("handshake refused: " + ("the server's key is not the trusted one"
                                                          if result < 0 else "session closed")))
        elif not self.connected and self._ctx:
            self._schedule_retransmit(loop)

    def write(self, plaintext: bytes) -> bool:
        return bool(self._ctx) and self.connected and \
            self._lib.dtls_write(self._ctx, self._pointer, plaintext, len(plaintext)) >= 0

    def close(self) -> None:
        if self._ctx and self.connected:
            self._lib.dtls_close(self._ctx, self._pointer)
        self.connected = False
        self._free()

    def _failed(self, error: DtlsError) -> None:
        if self.failed is None:
            self.failed = error
            self.connected = False
            self._on_failed(error)

    def _write(self, session: int, record: bytes) -> int:
        self._send(record)
        return len(record)

    def _read(self, session: int, plaintext: bytes) -> None:
        self._on_plaintext(plaintext)

    def _event(self, session: int, level: int, code: int) -> None:
        if level == 0 and code == _EVENT_CONNECTED:
            self.connected = True
            self._on_connected()
        elif level == _ALERT_FATAL or code == _ALERT_CLOSE_NOTIFY:
            what = "closed by the server" if code == _ALERT_CLOSE_NOTIFY else f"fatal alert {code} from the server"
            self._failed(DtlsError(what if self.connected else f"handshake refused: {what}"))

    def _psk_info(self, session: int, kind: int, description: bytes) -> bytes | int:
        credentials = self.credentials
        if kind == _PSK_IDENTITY:
            return credentials.identity
        if kind == _PSK_KEY:
            return credentials.key if description == credentials.identity else _DECRYPT_ERROR
        return b""

    def _verify_key(self, session: int, xy: bytes) -> int:
        return 0 if xy == self._trusted else _BAD_CERTIFICATE


class DtlsClientTransport(asyncio.DatagramTransport):
    """What open_dtls_endpoint returns: sendto(plaintext) encrypts (and queues until the
    handshake finished); close() ends the session."""

    def __init__(self, loop, protocol, credentials, remote_addr, handshake_timeout_s: float) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._udp: asyncio.DatagramTransport | None = None
        self._queue: collections.deque[bytes] = collections.deque()
        self._closing = False
        self._remote = remote_addr
        self._credentials = credentials
        self._handshake_timeout_s = handshake_timeout_s
        self._timeout: asyncio.TimerHandle | None = None
        self.engine: DtlsClient | None = None
        self.handshake_s: float | None = None
        self._started = 0.0

    # called by the UDP protocol below
    def _start(self, udp: asyncio.DatagramTransport) -> None:
        self._udp = udp
        peer = udp.get_extra_info("peername") or self._remote
        self.engine = DtlsClient(self._credentials, peer, send=self._send_record,
                                 on_plaintext=self._plaintext, on_connected=self._connected,
                                 on_failed=self._failed)
        self._protocol.connection_made(self)
        self._started = time.perf_counter()
        self._timeout = self._loop.call_later(self._handshake_timeout_s, self._timed_out)
        self.engine.connect(self._loop)

    def _send_record(self, record: bytes) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(record)

    def _plaintext(self, data: bytes) -> None:
        self._protocol.datagram_received(data, self._remote)

    def _connected(self) -> None:
        self.handshake_s = time.perf_counter() - self._started
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None
        while self._queue and self.engine is not None and self.engine.connected:
            self.engine.write(self._queue.popleft())

    def _failed(self, error: DtlsError) -> None:
        self._queue.clear()
        self._loop.call_soon(self._lose, error)

    def _timed_out(self) -> None:
        self._timeout = None
        if self.engine is not None and not self.engine.connected:
            self.engine._failed(DtlsError("DTLS handshake timed out"))

    def _lose(self, error: DtlsError | None) -> None:
        if error is not None:
            self._protocol.error_received(error)
        self.close(_error=error)

    def _datagram(self, data: bytes) -> None:
        if self.engine is not None:
            self.engine.datagram(data, self._loop)

    # asyncio.DatagramTransport
    def sendto(self, data, addr=None) -> None:
        if self._closing:
            return
        engine = self.engine
        if engine is not None and engine.connected:
            engine.write(bytes(data))
        elif engine is None or engine.failed is None:
            self._queue.append(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self, *, _error: DtlsError | None = None) -> None:
        if self._closing:
            return
        self._closing = True
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None
        if self.engine is not None:
            self.engine.close()
        if self._udp is not None:
            self._udp.close()
        self._loop.call_soon(self._protocol.connection_lost, _error)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name, default=None):
        if name == "peername":
            return self._remote
        if name == "dtls_connected":
            return self.engine is not None and self.engine.connected
        return self._udp.get_extra_info(name, default) if self._udp is not None else default

    def get_write_buffer_size(self) -> int:
        return len(self._queue)


class _UdpForDtls(asyncio.DatagramProtocol):
    def __init__(self, transport: DtlsClientTransport) -> None:
        self.dtls = transport

    def connection_made(self, transport) -> None:
        self.dtls._start(transport)

    def datagram_received(self, data, addr) -> None:
        self.dtls._datagram(data)

    def error_received(self, exc) -> None:
        self.dtls._protocol.error_received(exc)


async def open_dtls_endpoint(loop, protocol_factory, remote_addr, credentials: PskCredentials | RpkCredentials,
                             local_addr=None, *, handshake_timeout_s: float = 30.0):
    """Like loop.create_datagram_endpoint(remote_addr=...), over DTLS: (transport, protocol).

    The protocol gets connection_made at once; sendto before the handshake finished queues.
    A failed handshake (or one not finished within handshake_timeout_s) reaches the protocol
    as error_received(DtlsError), then connection_lost(DtlsError)."""
    protocol = protocol_factory()
    dtls = DtlsClientTransport(loop, protocol, credentials, remote_addr, handshake_timeout_s)
    await loop.create_datagram_endpoint(lambda: _UdpForDtls(dtls), remote_addr=remote_addr, local_addr=local_addr)
    return dtls, protocol
