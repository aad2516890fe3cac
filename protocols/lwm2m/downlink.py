"""Requests from the server to a device (Read, Write, Execute, Observe, Write-Attributes, Discover,
block-wise push) over the listener's socket."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import aiocoap
import structlog
from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption

from fleet.firmware.delivery import ImageBytes
from fleet.objectmodel import Reading, ResourcePath
from fleet.registrations.models import DeviceInfo, Registration
from fleet.registrations.service import RegistrationService
from aiocoap.transports import udp6

from protocols.coap.notifications import forget_request, reset_unclaimed_responses
from protocols.coap.outbound import Answer, OutboundRequests, RequestFailed
from protocols.coap.transport import CITY_TUNING, outbound_requests, udp_interface
from protocols.lwm2m import content, linkformat
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.negotiation import READABLE, ContentFormats
from protocols.lwm2m.observation import Observation

log = structlog.get_logger("fleet.lwm2m.downlink")

# A push starts at the largest block; the device may ask for smaller ones.
PUSH_BLOCK_SIZE = 1024


class DeviceRequestFailed(Exception):
    """The device answered with an error code, or did not answer at all."""

    def __init__(self, detail: str, code: str | None = None, *, final: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        # 4.xx means the device understood and refused, and `final` an answer that says the
        # same otherwise (no Observe in it): retrying cannot help.
        self.retryable = not final and not (code or "").startswith("4")


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    host: str
    port: int
    # Registered over coaps: reached through the coaps listener's DTLS session with it.
    secure: bool = False
    # Over coaps, whose session it must be: an address changes hands (a NAT gives a quiet
    # device's port to another device, which handshakes with its own key), and a request meant
    # for this device (a Write, its new key at a bootstrap) must not reach the next holder.
    device_id: UUID | None = None

    @classmethod
    def of(cls, registration: Registration) -> DeviceAddress:
        return cls(registration.address, registration.port, registration.secure, registration.device_id)

    def uri(self, path: ResourcePath) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'coaps' if self.secure else 'coap'}://{host}:{self.port}{path}"


class _Link:
    """One of the listener's interfaces (plain udp6, or coaps behind DTLS) and its outbound fast
    path: a device is spoken to over the one it registered on."""

    def __init__(self, interface) -> None:
        self.interface = interface
        # The interface's EndpointAddress class (coaps: protocols.coap.secure's, which says so).
        self.remote_class = getattr(interface, "_fleet_remote_type", udp6.UDP6EndpointAddress)
        self.outbound = outbound_requests(interface)
        reset_unclaimed_responses(interface._ctx)

    def remote(self, sockaddr: tuple):
        return self.remote_class(sockaddr, self.interface)


class DeviceClient:
    """Speaks to devices from the listener's own socket, so their answers come back to us.

    Read, Write, Execute and Discover go through the outbound fast path
    (:mod:`protocols.coap.outbound`); Observe, Write-Attributes, and a Read whose answer turns
    out block-wise, through aiocoap. Reads and observations are asked in the content format
    negotiated with the device (:mod:`protocols.lwm2m.negotiation`).
    """

    def __init__(self, context: aiocoap.Context, formats: ContentFormats | None = None, *,
                 secure_interface=None) -> None:
        """`secure_interface`: the coaps listener's interface (protocols.coap.secure); devices
        registered over coaps are spoken to there, through their DTLS session."""
        self.context = context
        self.formats = formats
        interface = udp_interface(context)
        self._plain = _Link(interface) if interface is not None else None
        self._secure = _Link(secure_interface) if secure_interface is not None else None
        # The plain link's, kept as they were: writes_fast and the counters are about it.
        self._interface = interface
        self._outbound = self._plain.outbound if self._plain is not None else None

    def close(self) -> None:
        """Fail what is still waiting for a device: the socket is about to close."""
        for link in (self._plain, self._secure):
            if link is not None:
                link.outbound.close()

    def _link(self, address: DeviceAddress) -> _Link | None:
        if not address.secure:
            return self._plain
        if self._secure is None:
            raise DeviceRequestFailed("the device registered over coaps, and this listener has none")
        if address.device_id is not None:
            identity = self._secure.interface._fleet_dtls.identity_of(self._sockaddr(address))
            if identity is not None and getattr(identity.credential, "device_id", None) != address.device_id:
                # (Without a session the request fails as it always did: no session to send in.)
                raise DeviceRequestFailed("another device's DTLS session holds the device's address now")
        return self._secure

    @staticmethod
    def _sockaddr(address: DeviceAddress) -> tuple:
        return _sockaddr(address.host, address.port)

    def _message(self, address: DeviceAddress, path: ResourcePath, **fields) -> Message:
        """A request addressed by socket address, not by URI: aiocoap would otherwise run
        getaddrinfo in a thread for every downlink request, even for an IP literal."""
        link = self._link(address)
        if link is None:
            return Message(uri=address.uri(path), transport_tuning=CITY_TUNING, **fields)
        message = Message(uri_path=[str(i) for i in path.ids], transport_tuning=CITY_TUNING, **fields)
        message.remote = link.remote(self._sockaddr(address))
        return message

    async def read(self, address: DeviceAddress, path: ResourcePath, *, device_id: UUID | None = None,
                   accept: int | None = content.SENML_CBOR) -> list[Reading]:
        """Read a path; given the device's id, in the content format negotiated with it."""
        if device_id is None or self.formats is None:
            return (await self._read_in(address, path, accept))[0]
        return await self._negotiated(device_id, path, functools.partial(self._read_in, address, path))

    async def _read_in(self, address: DeviceAddress, path: ResourcePath,
                       accept: int | None) -> tuple[list[Reading], int | None]:
        if self._link(address) is not None:
            answer = await self._fast(address, path, Code.GET, accept=accept)
            if not answer.blockwise:
                return (content.decode(answer.content_format, answer.payload, path, datetime.now(UTC)),
                        answer.content_format)
        request = self._message(address, path, code=Code.GET)
        if accept is not None:
            request.opt.accept = accept
        response = await self._exchange(request)
        return (content.decode(response.opt.content_format, bytes(response.payload), path, datetime.now(UTC)),
                response.opt.content_format)

    async def _negotiated(self, device_id: UUID | None, path: ResourcePath, attempt):
        """`attempt(accept)` in each format the device may answer in, until one is not refused
        with 4.06; the format that worked is remembered for the device."""
        formats = (await self.formats.to_try(device_id, path) if self.formats is not None and device_id
                   else [content.SENML_CBOR])
        for accept in formats:
            try:
                result, answered_in = await attempt(accept)
            except DeviceRequestFailed as exc:
                if (exc.code or "").startswith("4.06"):
                    continue
                raise
            if self.formats is not None and device_id:
                await self.formats.worked(device_id, answered_in if answered_in in READABLE else accept)
            return result
        raise DeviceRequestFailed(f"device answered {Code.NOT_ACCEPTABLE} to every content format Fleet "
                                  f"reads: {', '.join(map(str, formats))}", code=str(Code.NOT_ACCEPTABLE))

    @property
    def writes_fast(self) -> bool:
        return self._outbound is not None

    @property
    def outbound(self) -> OutboundRequests | None:
        """The fast path's counters (sent, retransmitted, empty_acked, failed, failures)."""
        return self._outbound

    def start_write(self, address: DeviceAddress, path: str, value: object) -> asyncio.Future:
        """Send a Write through the fast path (`writes_fast` must be true); the future gives the
        device's Answer, for `check`. Callers with thousands in flight save a task each."""
        payload, content_format = _write_payload(value)
        return self._link(address).outbound.request(self._sockaddr(address), _PUT, _segments(path),
                                                    content_format=content_format, payload=payload)

    async def exchange(self, address: DeviceAddress, code: Code, segments: tuple[str, ...], *,
                       payload: bytes = b"", content_format: int | None = None) -> Answer:
        """One request of any kind, its answer checked: the bootstrap interface's Delete, Write
        (whole instances, of resources the registry marks read-only or not operable at all: no
        operation check here) and Finish (POST /bs), which are not paths of the object model."""
        link = self._link(address)
        if link is None:
            raise DeviceRequestFailed("no udp6 interface to send from")
        try:
            answer = await link.outbound.request(self._sockaddr(address), int(code), segments,
                                                 content_format=content_format, payload=payload)
        except RequestFailed as exc:
            raise DeviceRequestFailed(f"no answer: {exc}") from None
        return self.check(answer)

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
        if self._link(address) is not None:
            await self._fast(address, path, Code.PUT, content_format=content_format, payload=payload)
            return
        request = self._message(address, path, code=Code.PUT, payload=payload,
                                content_format=content_format)
        await self._exchange(request)

    async def execute(self, address: DeviceAddress, path: ResourcePath, arguments: str | None = None) -> None:
        payload = (arguments or "").encode()
        if self._link(address) is not None:
            await self._fast(address, path, Code.POST, payload=payload)
            return
        request = self._message(address, path, code=Code.POST, payload=payload)
        await self._exchange(request)

    async def push(self, address: DeviceAddress, path: ResourcePath, payload: bytes | ImageBytes, *,
                   block_size: int = PUSH_BLOCK_SIZE) -> int:
        """Write `payload` block-wise (RFC 7959 Block1 PUT, opaque) and return the block size the
        device ended up taking. A 2.31 Continue naming a smaller size, or a 4.13 whose Block1
        names the size it takes, switches to that size for the rest (§2.3, §2.9.3); the device's
        2.04 on the last block is success. Block by block through aiocoap, which retransmits each."""
        offset, size = 0, block_size
        while True:
            block = payload[offset:offset + size]
            more = offset + len(block) < len(payload)
            request = self._message(address, path, code=Code.PUT, payload=block,
                                    content_format=content.OPAQUE)
            request.opt.block1 = BlockOption.BlockwiseTuple(offset // size, more, size.bit_length() - 5)
            if offset == 0:
                request.opt.size1 = len(payload)
            try:
                response = await self.context.request(request, handle_blockwise=False).response
            except aiocoap.error.Error as exc:
                raise DeviceRequestFailed(f"no answer to block {offset // size}: {type(exc).__name__}") from None
            taken = response.opt.block1
            if response.code == Code.REQUEST_ENTITY_TOO_LARGE and taken is not None and taken.size < size:
                size = taken.size  # the device took nothing: the same bytes again, smaller
                continue
            if not response.code.is_successful() or (more and response.code != Code.CONTINUE):
                diagnostic = bytes(response.payload[:200]).decode("utf-8", "replace")
                raise DeviceRequestFailed(f"device answered {response.code} to block {offset // size} of "
                                          f"{size} bytes: {diagnostic}", code=str(response.code))
            if not more:
                return size
            offset += len(block)
            if taken is not None and taken.size < size:
                size = taken.size  # §2.3: the rest in the device's size

    async def write_attributes(self, address: DeviceAddress, path: ResourcePath,
                               attributes: dict[str, float]) -> None:
        """Write-Attributes (TS §5.4.4): a PUT whose Uri-Query carries them, with no payload."""
        query = [f"{name}={_plain_text(value)}" for name, value in attributes.items()]
        await self._exchange(self._message(address, path, code=Code.PUT, uri_query=query))

    async def discover(self, address: DeviceAddress, path: ResourcePath) -> list[linkformat.Link]:
        """Discover (TS §5.4.2): the device's links below a path, with their attributes."""
        if self._link(address) is not None:
            answer = await self._fast(address, path, Code.GET, accept=linkformat.CONTENT_FORMAT)
            if not answer.blockwise:
                return _links(answer.content_format, answer.payload)
        request = self._message(address, path, code=Code.GET, accept=linkformat.CONTENT_FORMAT)
        response = await self._exchange(request)
        return _links(response.opt.content_format, bytes(response.payload))

    async def observe(self, address: DeviceAddress, path: ResourcePath, on_readings, *,
                      device_id: UUID | None = None) -> tuple[list[Reading], Observation]:
        """Start observing, in the content format negotiated with the device; returns the first
        readings and the observation, whose `follow()` hands each later notification's readings
        to `on_readings(readings)` and whose `cancel()` ends it on the device too."""
        observation = await self._negotiated(
            device_id, path, functools.partial(self._observe_in, address, path, on_readings))
        first = content.decode(observation.response.opt.content_format, bytes(observation.response.payload),
                               path, datetime.now(UTC))
        return first, observation

    async def _observe_in(self, address: DeviceAddress, path: ResourcePath, on_readings,
                          accept: int) -> tuple[Observation, int | None]:
        request = self._message(address, path, code=Code.GET, observe=0, accept=accept)
        pending = self.context.request(request)
        response = await self._await(pending.response)
        if response.opt.observe is None:
            raise DeviceRequestFailed("device does not support observing this path", final=True)
        return Observation(self, address, path, accept, pending, response, on_readings), response.opt.content_format

    def deregister(self, address: DeviceAddress, path: ResourcePath, accept: int, token: bytes,
                   on_failure) -> bool:
        """Send an observation's deregistration (a GET with Observe=1 and its token); False if
        it cannot be sent from here. aiocoap's requests always draw a new token, so this goes to
        its message layer, which retransmits it; the device's answer reaches the observation."""
        link = self._link(address)
        if link is None:
            return False
        request = self._message(address, path, code=Code.GET, observe=1, accept=accept)
        request.token = token
        link.interface._ctx.send_message(request, on_failure)
        return True

    def forget(self, response: Message) -> None:
        """Stop listening on the token `response` came with: what follows on it is reset."""
        interface = getattr(response.remote, "interface", None)  # the link it came over
        if interface is not None:
            forget_request(interface._ctx, response.token, response.remote)

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
            answer = await self._link(address).outbound.request(
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


def _links(content_format: int | None, payload: bytes) -> list[linkformat.Link]:
    if content_format not in (linkformat.CONTENT_FORMAT, None):
        raise CodecError(f"discover answered in content format {content_format}, not link-format")
    return linkformat.parse(payload)


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
        if self.client.formats is not None:
            self.client.formats.registered(registration)
        if update:
            return
        address = DeviceAddress.of(registration)
        try:
            readings = await self.client.read(address, ResourcePath(3, 0), device_id=registration.device_id)
        except (DeviceRequestFailed, CodecError) as exc:
            log.info("reading /3/0 after registration failed", endpoint=registration.endpoint,
                     error=str(exc))
            return
        fields = {DEVICE_INFO[r.path.resource]: str(r.value) for r in readings
                  if r.path.object == 3 and r.path.resource in DEVICE_INFO and r.value is not None}
        await self.registrations.record_device_info(registration.device_id, DeviceInfo(**fields))
        await self.store(session, readings, datetime.now(UTC))
        log.debug("device info recorded", endpoint=registration.endpoint, **fields)
