"""Requests from the server to a device (Read, Write, Execute, Observe) over the listener's socket."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import aiocoap
import structlog
from aiocoap import Code, Message

from fleet.objectmodel import Reading, ResourcePath
from fleet.registrations.models import DeviceInfo, Registration
from fleet.registrations.service import RegistrationService
from protocols.coap.transport import CITY_TUNING
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
    """Speaks to devices from the listener's own socket, so their answers come back to us."""

    def __init__(self, context: aiocoap.Context) -> None:
        self.context = context

    async def read(self, address: DeviceAddress, path: ResourcePath, *,
                   accept: int | None = content.SENML_CBOR) -> list[Reading]:
        request = Message(code=Code.GET, uri=address.uri(path), transport_tuning=CITY_TUNING)
        if accept is not None:
            request.opt.accept = accept
        response = await self._exchange(request)
        return content.decode(response.opt.content_format, bytes(response.payload), path,
                              datetime.now(UTC))

    async def _exchange(self, request: Message) -> Message:
        try:
            response = await self.context.request(request).response
        except aiocoap.error.Error as exc:
            raise DeviceRequestFailed(f"no answer: {type(exc).__name__}") from None
        if not response.code.is_successful():
            diagnostic = bytes(response.payload[:200]).decode("utf-8", "replace")
            raise DeviceRequestFailed(f"device answered {response.code}: {diagnostic}",
                                      code=str(response.code))
        return response


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
