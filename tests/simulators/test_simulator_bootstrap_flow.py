"""A simulated device fresh from the factory asks a bootstrap server for its account, takes
Bootstrap-Delete, -Write and -Finish, then registers with Fleet using what was written. The
bootstrap server here is a toy on plain CoAP, so the client's side is tested apart from DTLS."""

from __future__ import annotations

import asyncio
import itertools

from fleet.objectmodel import CATALOG, ResourcePath
from protocols.coap import message as coap
from protocols.lwm2m import content, tlv
from simulators.credentials import CredentialsFile, new_credential
from simulators.simulation import SimulationConfig
from tests.simulators.conftest import eventually, provision, running

P = ResourcePath.parse


class ToyBootstrapServer(asyncio.DatagramProtocol):
    """Answers POST /bs with 2.04 and lets the test send the bootstrap server's requests."""

    def __init__(self) -> None:
        self.transport = None
        self.requests: asyncio.Queue = asyncio.Queue()
        self.answers: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(0x100)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        message = coap.decode(data)
        if message.is_request:
            self.transport.sendto(coap.encode(coap.ACK, coap.CHANGED, message.mid, message.token), addr)
            self.requests.put_nowait((message, addr))
        elif message.mtype == coap.ACK and message.mid in self.answers:
            self.answers.pop(message.mid).set_result(message)

    async def ask(self, addr, code: int, path: str, payload: bytes = b"", fmt: int | None = None) -> int:
        mid = next(self.ids)
        options = [(coap.URI_PATH, segment.encode()) for segment in path.strip("/").split("/") if segment]
        if fmt is not None:
            options.append((coap.CONTENT_FORMAT, coap.uint(fmt)))
        self.answers[mid] = answer = asyncio.get_running_loop().create_future()
        self.transport.sendto(coap.encode(coap.CON, code, mid, mid.to_bytes(2, "big"), options, payload), addr)
        async with asyncio.timeout(5):
            return (await answer).code


async def test_a_device_bootstraps_then_registers_with_the_account_written(db, listener, seoul, tmp_path):
    devices_file = await provision(seoul, tmp_path, {"streetlight": 1})
    endpoint = f"{seoul.slug}-sim-sl-00001"
    credentials = tmp_path / "credentials.json"
    CredentialsFile({endpoint: new_credential("bootstrap", endpoint)}).save(credentials)
    loop = asyncio.get_running_loop()
    transport, bootstrap_server = await loop.create_datagram_endpoint(ToyBootstrapServer, local_addr=("127.0.0.1", 0))
    try:
        config = SimulationConfig(
            counts={"streetlight": 1}, server=f"coap://127.0.0.1:{listener.port}", devices_file=devices_file,
            credentials_file=credentials, bootstrap_server=f"coap://127.0.0.1:{transport.get_extra_info('sockname')[1]}",
            progress_s=0)
        async with running(config) as simulation:
            async with asyncio.timeout(10):
                request, device = await bootstrap_server.requests.get()
            assert [v for n, v in request.options if n == coap.URI_PATH] == [b"bs"]
            assert (coap.URI_QUERY, f"ep={endpoint}".encode()) in request.options
            assert await bootstrap_server.ask(device, coap.GET, "/3/0") == coap.METHOD_NOT_ALLOWED
            assert await bootstrap_server.ask(device, coap.DELETE, "/") == coap.DELETED
            security = tlv.encode([(P("/0/1/0"), f"coap://127.0.0.1:{listener.port}"), (P("/0/1/1"), False),
                                   (P("/0/1/2"), 3), (P("/0/1/3"), b""), (P("/0/1/4"), b""),
                                   (P("/0/1/5"), b""), (P("/0/1/10"), 1)], P("/0/1"), CATALOG)
            server = tlv.encode([(P("/1/0/0"), 1), (P("/1/0/1"), 120), (P("/1/0/6"), False),
                                 (P("/1/0/7"), "U")], P("/1/0"), CATALOG)
            assert await bootstrap_server.ask(device, coap.PUT, "/0/1", security, content.LWM2M_TLV) == coap.CHANGED
            assert await bootstrap_server.ask(device, coap.PUT, "/1/0", server, content.LWM2M_TLV) == coap.CHANGED
            assert await bootstrap_server.ask(device, coap.POST, "/bs") == coap.CHANGED

            async def registered():
                async with db.system_tx() as conn:
                    return await conn.fetchval("select lifetime_s from registrations where endpoint = $1", endpoint)

            assert await eventually(registered) == 120, "registered with the lifetime written to /1/0/1"
            assert (simulation.stats.bootstrap_requests, simulation.stats.bootstraps) == (1, 1)
    finally:
        transport.close()
