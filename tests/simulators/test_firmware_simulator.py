"""Simulated devices update their firmware over real UDP: pulled with Block2 from the Package
URI, pushed with Block1 on /5/0/0, checked, installed, and back with a new registration on the
new version; each firmware fault kind's outcome. The server is a tiny aiocoap one in the test:
a registration directory, and the images it serves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiocoap
import pytest
from aiocoap import Code, Message, resource

from protocols.coap import message as coap
from protocols.coap.transport import udp_sockets
from simulators import firmware_download, firmware_transfer, inventory
from simulators.exchanges import Timing
from simulators.faults import FORCED_DELAY_S, FaultPlan
from simulators.firmware import build_image
from simulators.simulation import SimulationConfig
from tests.simulators.conftest import eventually, running

OLD, NEW = "3.2.1", "3.3.0"
IMAGE = build_image(NEW, 20_000)
TEXT, OPAQUE = 0, 42


class Directory(resource.Resource):
    """POST /rd: a new registration each time (what the simulator calls a reboot's return)."""

    def __init__(self, server: TinyServer) -> None:
        super().__init__()
        self.server = server

    async def render_post(self, request: Message) -> Message:
        query = dict(q.partition("=")[::2] for q in request.opt.uri_query)
        number = str(sum(len(v) for v in self.server.registrations.values()) + 1)
        self.server.site.add_resource(("rd", number), Accepting())
        self.server.registrations.setdefault(query["ep"], []).append(request.remote.hostinfo)
        self.server.bindings[query["ep"]] = query.get("b")
        return Message(code=Code.CREATED, location_path=("rd", number))


class Accepting(resource.Resource):
    """A registration's updates and de-registration, and Sends: all accepted."""

    async def render_post(self, request: Message) -> Message:
        return Message(code=Code.CHANGED)

    async def render_delete(self, request: Message) -> Message:
        return Message(code=Code.DELETED)


class Package(resource.Resource):
    """An image, block-wise at whatever size the device asks for."""

    def __init__(self, image: bytes) -> None:
        super().__init__()
        self.image = image
        self.block_sizes: list[int] = []

    async def render_get(self, request: Message) -> Message:
        if request.opt.block2 is not None:
            self.block_sizes.append(request.opt.block2.size)
        return Message(payload=self.image, content_format=OPAQUE, size2=len(self.image))


class TinyServer:
    def __init__(self) -> None:
        self.registrations: dict[str, list[str]] = {}
        self.bindings: dict[str, str | None] = {}
        self.site = resource.Site()
        self.site.add_resource(("rd",), Directory(self))
        self.site.add_resource(("dp",), Accepting())
        self.packages = {"img": Package(IMAGE), "junk": Package(b"\x00" * 5000),
                         "huge": Package(build_image(NEW, 5 << 20))}  # beyond a light's 4 MiB
        for name, package in self.packages.items():
            self.site.add_resource(("fw", name), package)
        self.context: aiocoap.Context | None = None
        self.port = 0

    def uri(self, name: str) -> str:
        return f"coap://127.0.0.1:{self.port}/fw/{name}"

    async def ask(self, endpoint: str, code: Code, path: str, payload: bytes = b"", **options) -> Message:
        host = self.registrations[endpoint][-1]
        request = Message(code=code, uri=f"coap://{host}{path}", payload=payload, **options)
        return await asyncio.wait_for(self.context.request(request).response, 20)

    async def value(self, endpoint: str, path: str) -> str:
        response = await self.ask(endpoint, Code.GET, path, accept=TEXT)
        assert response.code == Code.CONTENT, (path, response)
        return response.payload.decode()

    async def write_uri(self, endpoint: str, uri: str) -> Message:
        return await self.ask(endpoint, Code.PUT, "/5/0/1", uri.encode(), content_format=TEXT)


@contextlib.asynccontextmanager
async def tiny_server() -> AsyncIterator[TinyServer]:
    server = TinyServer()
    server.context = await aiocoap.Context.create_server_context(server.site, bind=("127.0.0.1", 0),
                                                                 transports=["udp6"])
    server.port = udp_sockets(server.context)[0].getsockname()[1]
    try:
        yield server
    finally:
        await server.context.shutdown()


@pytest.fixture(autouse=True)
def quick_installs(monkeypatch):
    # Installing and booting take moments, not seconds, so the tests wait less.
    monkeypatch.setattr(firmware_transfer, "INSTALL_S", 0.3)
    monkeypatch.setattr(firmware_transfer, "BOOT_S", 0.5)


def devices_file(tmp_path: Path, counts: dict[str, int]) -> Path:
    specs = [spec for kind, count in counts.items()
             for spec in inventory.plan("fwtest", kind, range(1, count + 1), 7)]
    path = tmp_path / "devices.csv"
    path.write_text(inventory.import_csv(specs))
    return path


def config(server: TinyServer, path: Path, counts: dict[str, int], **overrides) -> SimulationConfig:
    return SimulationConfig(**({"counts": counts, "server": f"coap://127.0.0.1:{server.port}",
                                "devices_file": path, "seed": 3, "progress_s": 0} | overrides))


def light(number: int) -> str:
    return inventory.endpoint_name("fwtest", "streetlight", number)


async def all_registered(server: TinyServer, count: int) -> bool:
    return len(server.registrations) == count


async def state(server: TinyServer, endpoint: str, wanted: str) -> bool:
    return await server.value(endpoint, "/5/0/3") == wanted


async def test_pull_download_update_and_register_again_on_the_new_version(tmp_path):
    counts = {"streetlight": 1, "waste_bin": 1}
    async with (tiny_server() as server, tiny_server() as elsewhere,
                running(config(server, devices_file(tmp_path, counts), counts)) as sim):
        await eventually(lambda: all_registered(server, 2))
        sl, wb = light(1), inventory.endpoint_name("fwtest", "waste_bin", 1)
        assert await server.value(sl, "/3/0/3") == OLD
        assert await server.value(sl, "/5/0/9") == "2" and await server.value(wb, "/5/0/9") == "0"
        assert (await server.ask(sl, Code.POST, "/5/0/2")).code == Code.METHOD_NOT_ALLOWED  # Idle

        notified: list[bytes] = []
        observation = server.context.request(Message(code=Code.GET, observe=0, accept=TEXT,
                                                     uri=f"coap://{server.registrations[sl][-1]}/5/0/3"))
        observation.observation.register_callback(lambda m: notified.append(m.payload))
        assert (await observation.response).payload == b"0"

        # The light from the LwM2M server's own address (its own socket), the bin from another
        # host (a socket for the download).
        assert (await server.write_uri(sl, server.uri("img"))).code == Code.CHANGED
        assert (await server.write_uri(wb, elsewhere.uri("img"))).code == Code.CHANGED
        for endpoint in (sl, wb):
            await eventually(lambda e=endpoint: state(server, e, "2"))
        # Each at its own block size.
        assert set(server.packages["img"].block_sizes) == {1024}
        assert set(elsewhere.packages["img"].block_sizes) == {512}
        assert await server.value(sl, "/5/0/7") == NEW and await server.value(sl, "/5/0/5") == "0"

        assert (await server.ask(sl, Code.POST, "/5/0/2")).code == Code.CHANGED
        await eventually(lambda: len(server.registrations[sl]) == 2)  # rebooted: a new registration
        assert await server.value(sl, "/3/0/3") == NEW
        assert (await server.value(sl, "/5/0/3"), await server.value(sl, "/5/0/5")) == ("0", "1")
        await eventually(lambda: b"3" in notified)
        # Downloading, Downloaded, Updating, in order. Observe carries the latest state (RFC 7641
        # §3.3): a state that lasted less than one notification's turn (a small image on a fast
        # link) may be skipped, never reordered.
        assert notified[:notified.index(b"3") + 1] in ([b"1", b"2", b"3"], [b"2", b"3"]), notified
        assert await server.value(wb, "/3/0/3") != NEW  # the bin was never told to install
        stats = sim.stats
        assert (stats.fw_downloaded, stats.fw_updated, stats.fw_failed) == (2, 1, 0)


async def test_push_in_bigger_blocks_than_the_device_takes_continues_at_its_size(tmp_path):
    counts = {"streetlight": 1, "waste_bin": 1, "wifi_ap": 1}
    path = devices_file(tmp_path, counts)
    # Forced firmware faults wait for an update: none strikes after the first report.
    faults = FaultPlan.parse(["fw_brick=1", "fw_install_fail=1"])
    async with tiny_server() as server, running(config(server, path, counts, firmware_block_size=256,
                                                       faults=faults)) as sim:
        await eventually(lambda: all_registered(server, 3))
        sl = light(1)
        image = build_image(NEW, 10_000)
        response = await server.ask(sl, Code.PUT, "/5/0/0", image, content_format=OPAQUE)  # 1024 blocks
        assert response.code == Code.CHANGED
        # The first block whole, then the rest in the 256 bytes the device answered 2.31 with.
        assert sim.stats.fw_blocks == 1 + -(-(len(image) - 1024) // 256)
        assert await server.value(sl, "/5/0/3") == "2" and await server.value(sl, "/5/0/7") == NEW

        assert (await server.ask(sl, Code.PUT, "/5/0/0", b"\0", content_format=OPAQUE)).code == Code.CHANGED
        assert (await server.value(sl, "/5/0/3"), await server.value(sl, "/5/0/5")) == ("0", "0")

        wb, ap = inventory.endpoint_name("fwtest", "waste_bin", 1), inventory.endpoint_name("fwtest", "wifi_ap", 1)
        refused = await server.ask(wb, Code.PUT, "/5/0/0", image, content_format=OPAQUE)
        assert refused.code == Code.METHOD_NOT_ALLOWED  # bins only pull
        assert (await server.write_uri(ap, server.uri("img"))).code == Code.METHOD_NOT_ALLOWED  # APs only push
        pushed = await server.ask(ap, Code.PUT, "/5/0/0", b"\x00" * 3000, content_format=OPAQUE)
        assert pushed.code == Code.CHANGED  # taken whole; then found to be no firmware at all
        assert (await server.value(ap, "/5/0/3"), await server.value(ap, "/5/0/5")) == ("0", "6")
        await asyncio.sleep(FORCED_DELAY_S + 0.5)
        assert not sim.stats.faults and await server.value(sl, "/3/0/3") == OLD


async def test_each_firmware_fault_and_bad_package_ends_as_it_should(tmp_path):
    counts = {"streetlight": 11}
    faults = ["fw_download_fail", "fw_corrupt", "fw_slow", "fw_install_fail", "fw_rollback", "fw_brick"]
    async with tiny_server() as server, running(config(server, devices_file(tmp_path, counts), counts)) as sim:
        await eventually(lambda: all_registered(server, 11))
        for number, fault in enumerate(faults, start=1):
            sim.device(light(number)).faults.forced = (fault,)
        for number in range(1, 7):
            assert (await server.write_uri(light(number), server.uri("img"))).code == Code.CHANGED
        assert (await server.write_uri(light(7), server.uri("junk"))).code == Code.CHANGED
        assert (await server.write_uri(light(8), "http://127.0.0.1/fw/img")).code == Code.CHANGED
        assert (await server.write_uri(light(9), "coap://[::1/fw")).code == Code.CHANGED
        assert (await server.write_uri(light(10), server.uri("missing"))).code == Code.CHANGED
        assert (await server.write_uri(light(11), server.uri("huge"))).code == Code.CHANGED

        async def ended(endpoint: str, wanted: tuple[str, str]) -> bool:
            return (await server.value(endpoint, "/5/0/3"), await server.value(endpoint, "/5/0/5")) == wanted

        await eventually(lambda: ended(light(1), ("0", "4")))  # the download broke off
        await eventually(lambda: ended(light(2), ("0", "5")))  # a flipped byte
        await eventually(lambda: ended(light(7), ("0", "6")))  # no trailer
        await eventually(lambda: ended(light(8), ("0", "9")))  # http: not a protocol it speaks
        await eventually(lambda: ended(light(9), ("0", "7")))  # not a URI
        await eventually(lambda: ended(light(10), ("0", "7")))  # 4.04 there
        await eventually(lambda: ended(light(11), ("0", "2")))  # Size2 beyond its flash
        assert server.packages["huge"].block_sizes == [1024]  # it stopped at the first block
        for number in (3, 4, 5, 6):  # the slow link still gets there (20 blocks, 0.2 s apart)
            await eventually(lambda n=number: state(server, light(n), "2"), timeout_s=20)

        for number in (4, 5, 6):
            assert (await server.ask(light(number), Code.POST, "/5/0/2")).code == Code.CHANGED
        await eventually(lambda: len(server.registrations[light(4)]) == 2)
        await eventually(lambda: len(server.registrations[light(5)]) == 2)
        assert await server.value(light(4), "/3/0/3") == OLD and await ended(light(4), ("0", "8"))
        # Rolled back: it believes the install went through, yet runs the old version.
        assert await server.value(light(5), "/3/0/3") == OLD and await ended(light(5), ("0", "1"))
        await asyncio.sleep(firmware_transfer.INSTALL_S + 3 * firmware_transfer.BOOT_S)
        assert len(server.registrations[light(6)]) == 1  # bricked: never back
        assert sim.device(light(6)).link.silent
        for fault in faults:
            assert sim.stats.faults.get(fault) == 1, fault


async def test_a_device_told_so_sleeps_in_queue_mode_or_cannot_be_observed_on_object_5(tmp_path):
    counts = {"streetlight": 2}
    sleeper, plain = light(1), light(2)
    async with tiny_server() as server, running(config(
            server, devices_file(tmp_path, counts), counts, queue_mode=frozenset({sleeper}),
            unobservable_firmware=frozenset({plain}))):
        await eventually(lambda: all_registered(server, 2))
        assert server.bindings == {sleeper: "UQ", plain: "U"}
        for endpoint, observable in ((sleeper, True), (plain, False)):
            for path in ("/5/0/3", "/3/0/3"):
                answer = await server.ask(endpoint, Code.GET, path, observe=0, accept=TEXT)
                assert answer.code == Code.CONTENT
                # Only object 5 of the one told so is answered as a plain read (RFC 7641 §2).
                assert (answer.opt.observe is not None) == (observable or path == "/3/0/3"), (endpoint, path)


def test_firmware_faults_are_chosen_like_the_others_but_wait_for_an_update():
    plan = FaultPlan.parse(["fw_install_fail=0.5", "fw-slow"])
    chosen = plan.forced_on({"streetlight": ["a", "b"], "wifi_ap": ["c", "d"]}, seed=1)
    assert len(chosen["fw_install_fail"]) == 2 and chosen["fw_slow"] == {"a", "b", "c", "d"}


class LossyFileServer(asyncio.DatagramProtocol):
    """A bare file server on another port that loses requests: the first ask for block 2 of
    /fw/lossy, and everything after block 0 of /fw/dead."""

    def __init__(self) -> None:
        self.asked: list[tuple[bytes, int]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        request = coap.decode(data)
        name = request.option_values(coap.URI_PATH)[-1]
        number, _more, size = coap.block_option(request.option(coap.BLOCK2))
        self.asked.append((name, number))
        if (name == b"lossy" and (name, 2) == self.asked[-1] and self.asked.count((name, 2)) == 1
                or name == b"dead" and number > 0):
            return
        start = number * size
        options = [(coap.BLOCK2, coap.block_value(number, start + size < len(IMAGE), size))]
        self.transport.sendto(coap.encode(coap.ACK, coap.CONTENT, request.mid, request.token, options,
                                          IMAGE[start:start + size]), addr)


async def test_a_lost_block_is_asked_again_and_a_dead_link_ends_in_connection_lost(tmp_path):
    counts = {"streetlight": 2}
    lossy = LossyFileServer()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: lossy, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        async with tiny_server() as server, running(config(server, devices_file(tmp_path, counts), counts)) as sim:
            await eventually(lambda: all_registered(server, 2))
            # A quick-giving-up link, so losing a block costs a second rather than a minute.
            sim.clients[0].network.timing = Timing(ack_timeout_s=0.2, max_retransmit=1)
            for number, name in ((1, "lossy"), (2, "dead")):
                uri = f"coap://127.0.0.1:{port}/fw/{name}"
                assert (await server.write_uri(light(number), uri)).code == Code.CHANGED
            await eventually(lambda: state(server, light(1), "2"))
            assert lossy.asked.count((b"lossy", 2)) == 2  # lost once, asked again, then on
            async def gave_up() -> bool:
                return await server.value(light(2), "/5/0/5") == "4"

            await eventually(gave_up, timeout_s=20)
            assert await server.value(light(2), "/5/0/3") == "0"
            # The first try and its retransmission, then MAX_BLOCK_RETRIES more of each.
            assert lossy.asked.count((b"dead", 1)) == 2 * (1 + firmware_download.MAX_BLOCK_RETRIES)
    finally:
        transport.close()
