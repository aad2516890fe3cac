"""A minimal LwM2M device on aiocoap for protocol tests: registers, answers reads and writes."""

from __future__ import annotations

import aiocoap
import aiocoap.resource as resource
import cbor2
from aiocoap import Code, Message

from fleet.objectmodel import Reading, ResourcePath
from protocols.lwm2m import senml


class Resource(resource.ObservableResource):
    def __init__(self, device: MiniDevice, path: str, value) -> None:
        super().__init__()
        self.device, self.path, self.value = device, path, value
        self.writable = True

    async def render_get(self, request):
        pack = senml.encode_cbor([Reading(ResourcePath.parse(self.path), None, self.value)])
        return Message(code=Code.CONTENT, payload=pack, content_format=112)

    async def render_put(self, request):
        if request.opt.content_format != 0:
            return Message(code=Code.UNSUPPORTED_CONTENT_FORMAT)
        self.value = int(request.payload.decode())
        self.device.writes.append((self.path, self.value))
        self.updated_state()
        return Message(code=Code.CHANGED)


class MiniDevice:
    """Own UDP socket, like a real device; the server's requests arrive on it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.writes: list[tuple[str, int]] = []
        self.site = resource.Site()
        self.resources: dict[str, Resource] = {}
        self.location: tuple[str, ...] | None = None
        self.context: aiocoap.Context | None = None

    def add(self, path: str, value) -> None:
        self.resources[path] = Resource(self, path, value)
        self.site.add_resource(tuple(path.strip("/").split("/")), self.resources[path])

    async def start(self) -> None:
        self.context = await aiocoap.Context.create_server_context(self.site, bind=("127.0.0.1", 0),
                                                                   transports=["udp6"])

    async def register(self, port: int, *, lifetime: int = 300, binding: str = "U") -> Message:
        links = ",".join(f"<{p.rsplit('/', 1)[0]}>" for p in self.resources).encode()
        request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/rd?ep={self.endpoint}&lt={lifetime}&b={binding}&lwm2m=1.1",
                          payload=links, content_format=40)
        response = await self.context.request(request).response
        self.location = response.opt.location_path
        return response

    async def update(self, port: int) -> Message:
        request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/{'/'.join(self.location)}")
        return await self.context.request(request).response

    async def send(self, port: int, readings) -> Message:
        request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/dp",
                          payload=cbor2.dumps(readings), content_format=112)
        return await self.context.request(request).response

    async def stop(self) -> None:
        if self.context is not None:
            await self.context.shutdown()
