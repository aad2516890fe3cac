"""Requests from the server to a device (Read, Write, Execute, Observe) over the listener's socket."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from datetime import UTC, datetime

import aiocoap
import structlog
from aiocoap import Code, Message

from fleet.objectmodel import Reading, ResourcePath
from fleet.registrations.models import DeviceInfo, Registration
from fleet.registrations.service import RegistrationService
from aiocoap.transports import udp6

from protocols.coap.outbound import Answer, OutboundRequests, RequestFailed
from protocols.coap.transport import CITY_TUNING, outbound_requests, udp_interface
from protocols.lwm2m import content
from protocols.lwm2m.errors import CodecError

log = structlog.get_logger("fleet.lwm2m.downlink")


class DeviceRequestFailed(Exception):
    """The device answered with an error code, or did not answer at all."""

    def __init__(self, detail: str, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    host: str
    port: int

    def uri(self, path: ResourcePath) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"coap://{host}:{self.port}{path}"


class DeviceClient:
    """Speaks to devices from the listener's own socket, so their answers come back to us.

    Read, Write and Execute go through the outbound fast path (:mod:`protocols.coap.outbound`);
    Observe, and a Read whose answer turns out block-wise, through aiocoap.
    """

    def __init__(self, context: aiocoap.Context) -> None:
        self.context = context
        self._interface = udp_interface(context)
        self._outbound = outbound_requests(self._interface) if self._interface is not None else None

    def close(self) -> None:
        """Fail what is still waiting for a device: the socket is about to close."""
        if self._outbound is not None:
            self._outbound.close()

    @staticmethod
    def _sockaddr(address: DeviceAddress) -> tuple:
        return _sockaddr(address.host, address.port)

    def _message(self, address: DeviceAddress, path: ResourcePath, **fields) -> Message:
        """A request addressed by socket address, not by URI: aiocoap would otherwise run
        getaddrinfo in a thread for every downlink request, even for an IP literal."""
        if self._interface is None:
            return Message(uri=address.uri(path), transport_tuning=CITY_TUNING, **fields)
        message = Message(uri_path=[str(i) for i in path.ids], transport_tuning=CITY_TUNING, **fields)
        message.remote = udp6.UDP6EndpointAddress(self._sockaddr(address), self._interface)
        return message

    async def read(self, address: DeviceAddress, path: ResourcePath, *,
                   accept: int | None = content.SENML_CBOR) -> list[Reading]:
        if self._outbound is not None:
            answer = await self._fast(address, path, Code.GET, accept=accept)
            if not answer.blockwise:
                return content.decode(answer.content_format, answer.payload, path, datetime.now(UTC))
        request = self._message(address, path, code=Code.GET)
        if accept is not None:
            request.opt.accept = accept
        response = await self._exchange(request)
        return content.decode(response.opt.content_format, bytes(response.payload), path,
                              datetime.now(UTC))

    @property
    def writes_fast(self) -> bool:
        return self._outbound is not None

    @property
    def outbound(self) -> OutboundRequests | None:
        """The fast path's counters (sent, retransmitted, empty_acked, failed, failures)."""
        return self._outbound

    def start_write(self, host: str, port: int, path: str, value: object) -> asyncio.Future:
        """Send a Write through the fast path (`writes_fast` must be true); the future gives the
        device's Answer, for `check`. Callers with thousands in flight save a task each."""
        payload, content_format = _write_payload(value)
        return self._outbound.request(_sockaddr(host, port), _PUT, _segments(path),
                                      content_format=content_format, payload=payload)

    @staticmethod
    def check(answer: Answer) -> Answer:
        """The answer if it is a success, else DeviceRequestFailed with the device's diagnostic."""
        if not answer.successful:
            diagnostic = answer.payload[:200].decode("utf-8", "replace")
            answered = Code(answer.code)
            raise DeviceRequestFailed(f"device answered {answered}: {diagnostic}", code=str(answered))
        return answer

    async def write(self, address: DeviceAddress, path: ResourcePath, value: object) -> None:
        """Write one resource: plain text for scalars (TS §7.4.1), opaque for bytes."""
        payload, content_format = _write_payload(value)
        if self._outbound is not None:
            await self._fast(address, path, Code.PUT, content_format=content_format, payload=payload)
            return
        request = self._message(address, path, code=Code.PUT, payload=payload,
                                content_format=content_format)
        await self._exchange(request)

    async def execute(self, address: DeviceAddress, path: ResourcePath, arguments: str | None = None) -> None:
        payload = (arguments or "").encode()
        if self._outbound is not None:
            await self._fast(address, path, Code.POST, payload=payload)
            return
        request = self._message(address, path, code=Code.POST, payload=payload)
        await self._exchange(request)

    async def observe(self, address: DeviceAddress, path: ResourcePath, on_readings) -> tuple[list[Reading], object]:
        """Start observing; returns the first readings and a handle whose cancel() ends it.

        Each later notification is decoded and handed to `on_readings(readings)`.
        """
        request = self._message(address, path, code=Code.GET, observe=0)
        request.opt.accept = content.SENML_CBOR
        pending = self.context.request(request)
        response = await self._await(pending.response)
        if response.opt.observe is None:
            raise DeviceRequestFailed("device does not support observing this path")
        first = content.decode(response.opt.content_format, bytes(response.payload), path, datetime.now(UTC))

        async def follow() -> None:
            try:
                async for notification in pending.observation:
                    try:
                        readings = content.decode(notification.opt.content_format,
                                                  bytes(notification.payload), path, datetime.now(UTC))
                    except CodecError as exc:
                        log.warning("undecodable notification", uri=address.uri(path), error=str(exc))
                        continue
                    await on_readings(readings)
            except aiocoap.error.Error as exc:
                log.info("observation ended", uri=address.uri(path), reason=type(exc).__name__)

        return first, (pending, follow)

    async def _await(self, response_future) -> Message:
        try:
            response = await response_future
        except aiocoap.error.Error as exc:
            raise DeviceRequestFailed(f"no answer: {type(exc).__name__}") from None
        if not response.code.is_successful():
            diagnostic = bytes(response.payload[:200]).decode("utf-8", "replace")
            raise DeviceRequestFailed(f"device answered {response.code}: {diagnostic}",
                                      code=str(response.code))
        return response

    async def _fast(self, address: DeviceAddress, path: ResourcePath, code: Code, *,
                    content_format: int | None = None, accept: int | None = None,
                    payload: bytes = b"") -> Answer:
        try:
            answer = await self._outbound.request(
                self._sockaddr(address), int(code), tuple(str(i) for i in path.ids),
                content_format=content_format, accept=accept, payload=payload)
        except RequestFailed as exc:
            raise DeviceRequestFailed(f"no answer: {exc}") from None
        return self.check(answer)

    async def _exchange(self, request: Message) -> Message:
        return await self._await(self.context.request(request).response)


_PUT = int(Code.PUT)


def _sockaddr(host: str, port: int) -> tuple:
    """The udp6 socket address of a device registered from `host` (IPv4 as IPv4-mapped)."""
    return (f"::ffff:{host}" if ":" not in host else host, port, 0, 0)


@functools.lru_cache(maxsize=1024)
def _segments(path: str) -> tuple[str, ...]:
    return tuple(path.strip("/").split("/"))


def _write_payload(value: object) -> tuple[bytes, int]:
    if isinstance(value, bytes | bytearray):
        return bytes(value), content.OPAQUE
    return _plain_text(value).encode(), content.TEXT_PLAIN


def _plain_text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


DEVICE_INFO = {0: "manufacturer", 1: "model", 2: "serial", 3: "firmware_version"}


class DeviceInfoReader:
    """After a Register, read /3/0 and record manufacturer, model, serial and firmware."""

    def __init__(self, client: DeviceClient, registrations: RegistrationService, store) -> None:
        self.client = client
        self.registrations = registrations
        # store(session, readings, now): the listener's durable telemetry write
        self.store = store

    async def __call__(self, registration: Registration, session, *, update: bool = False) -> None:
        if update:
            return
        address = DeviceAddress(registration.address, registration.port)
        try:
            readings = await self.client.read(address, ResourcePath(3, 0))
        except (DeviceRequestFailed, CodecError) as exc:
            log.info("reading /3/0 after registration failed", endpoint=registration.endpoint,
                     error=str(exc))
            return
        fields = {DEVICE_INFO[r.path.resource]: str(r.value) for r in readings
                  if r.path.object == 3 and r.path.resource in DEVICE_INFO and r.value is not None}
        await self.registrations.record_device_info(registration.device_id, DeviceInfo(**fields))
        await self.store(session, readings, datetime.now(UTC))
        log.debug("device info recorded", endpoint=registration.endpoint, **fields)
