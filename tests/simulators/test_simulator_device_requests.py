"""What a simulated device answers when the server asks: Read in each content format, Write,
Execute, Discover, Observe, and the 4.xx codes for what it cannot do. Requests go out of the
listener's own socket, the only address a device accepts datagrams from."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import cbor2
from aiocoap import Code, Message

from fleet.objectmodel import ResourcePath
from protocols.lwm2m import content, linkformat, tlv
from protocols.lwm2m.downlink import DeviceAddress
from simulators.faults import FaultPlan
from simulators.simulation import SimulationConfig
from tests.simulators.conftest import eventually, provision, running

SEOUL = ZoneInfo("Asia/Seoul")
EVENING = datetime(2026, 11, 24, 20, 0, tzinfo=SEOUL)
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=SEOUL)
ONE_OF_EACH = {"streetlight": 1, "waste_bin": 1, "wifi_ap": 1}


def config(listener, devices_file, counts=ONE_OF_EACH, **overrides) -> SimulationConfig:
    return SimulationConfig(**({"counts": counts, "server": f"coap://127.0.0.1:{listener.port}",
                                "devices_file": devices_file, "seed": 5, "speed": 60,
                                "start": EVENING, "progress_s": 0} | overrides))


async def addresses(db) -> dict[str, DeviceAddress]:
    async with db.system_tx() as conn:
        rows = await conn.fetch("select endpoint, address, port from registrations")
    return {r["endpoint"].split("-")[-2]: DeviceAddress(r["address"], r["port"]) for r in rows}


async def registered(db, count: int) -> dict[str, DeviceAddress] | None:
    found = await addresses(db)
    return found if len(found) == count else None


async def ask(listener, address: DeviceAddress, code: Code, path: str, **options) -> Message:
    request = Message(code=code, uri=address.uri(ResourcePath.parse(path)), **options)
    return await asyncio.wait_for(listener.context.request(request).response, 10)


def decoded(response: Message, path: str) -> dict[str, object]:
    readings = content.decode(response.opt.content_format, bytes(response.payload),
                              ResourcePath.parse(path), datetime.now(UTC))
    return {str(r.path): r.value for r in readings}


async def test_reads_in_every_content_format(db, listener, seoul, tmp_path):
    devices_file = await provision(seoul, tmp_path, ONE_OF_EACH)
    async with running(config(listener, devices_file)):
        at = await eventually(lambda: registered(db, 3))
        light = at["sl"]
        cbor = await ask(listener, light, Code.GET, "/3/0")  # no Accept: SenML CBOR
        assert cbor.opt.content_format == content.SENML_CBOR
        values = decoded(cbor, "/3/0")
        assert values["/3/0/0"] == "Lumen Korea" and values["/3/0/3"] == "3.2.1"
        for fmt in (content.SENML_JSON, content.LWM2M_TLV, content.LWM2M_CBOR):
            response = await ask(listener, light, Code.GET, "/3/0", accept=fmt)
            assert response.code == Code.CONTENT and response.opt.content_format == fmt
            assert decoded(response, "/3/0") == values | {"/3/0/13": decoded(response, "/3/0")["/3/0/13"]}
        text = await ask(listener, light, Code.GET, "/3416/0/3", accept=content.TEXT_PLAIN)
        assert (text.opt.content_format, text.payload) == (0, b"100")
        whole = decoded(await ask(listener, at["ap"], Code.GET, "/12"), "/12")
        assert whole["/12/0/3"] == 1 and whole["/12/1/3"] == 1  # dual band: two radios

        # A block at a time when the server asks for small blocks (aiocoap reassembles).
        blocked = await ask(listener, light, Code.GET, "/3418/0", block2=(0, False, 0))
        assert decoded(blocked, "/3418/0")["/3418/0/35"] == 100


async def test_requests_a_device_cannot_serve_get_4xx(db, listener, seoul, tmp_path):
    devices_file = await provision(seoul, tmp_path, ONE_OF_EACH)
    async with running(config(listener, devices_file)):
        light = (await eventually(lambda: registered(db, 3)))["sl"]
        cases = [
            (Code.GET, "/9/0", {}, Code.NOT_FOUND),
            (Code.GET, "/3416/1", {}, Code.NOT_FOUND),
            (Code.GET, "/3/0/99", {}, Code.NOT_FOUND),
            (Code.GET, "/3/0/4", {}, Code.METHOD_NOT_ALLOWED),  # executable, not readable
            (Code.GET, "/3/0", {"accept": content.TEXT_PLAIN}, Code.NOT_ACCEPTABLE),
            (Code.GET, "/3/0", {"accept": 11543}, Code.NOT_ACCEPTABLE),
            (Code.PUT, "/3416/0/3", {"payload": b"5", "content_format": 0}, Code.METHOD_NOT_ALLOWED),
            (Code.PUT, "/3416/0/1", {"payload": b"x", "content_format": 0}, Code.BAD_REQUEST),
            (Code.PUT, "/3416/0/1", {"payload": b"5", "content_format": 50}, Code.UNSUPPORTED_CONTENT_FORMAT),
            (Code.POST, "/3416/0/3", {}, Code.METHOD_NOT_ALLOWED),  # execute a readable resource
            (Code.POST, "/3416", {"payload": b"", "content_format": content.LWM2M_TLV}, Code.METHOD_NOT_ALLOWED),
            (Code.DELETE, "/3416/0", {}, Code.METHOD_NOT_ALLOWED),
        ]
        for code, path, options, expected in cases:
            response = await ask(listener, light, code, path, **options)
            assert response.code == expected, (code, path, response.code, response.payload)
            assert response.payload, "a diagnostic is expected"


async def test_writes_in_tlv_and_senml_and_execute(db, listener, seoul, tmp_path):
    devices_file = await provision(seoul, tmp_path, ONE_OF_EACH)
    async with running(config(listener, devices_file, start=NOON)) as simulation:
        at = await eventually(lambda: registered(db, 3))
        light_path = ResourcePath(3416, 0)
        body = tlv.encode([(ResourcePath(3416, 0, 1), 30)], light_path)
        response = await ask(listener, at["sl"], Code.POST, "/3416/0", payload=body,
                             content_format=content.LWM2M_TLV)
        assert response.code == Code.CHANGED, response.payload
        level = decoded(await ask(listener, at["sl"], Code.GET, "/3416/0/3"), "/3416/0/3")
        assert level == {"/3416/0/3": 30}

        senml_body = cbor2.dumps([{-2: "/3416/0/", 0: "1", 2: 55}, {0: "53", 2: 3600}])
        response = await ask(listener, at["sl"], Code.PUT, "/3416/0", payload=senml_body,
                             content_format=content.SENML_CBOR)
        assert response.code == Code.CHANGED, response.payload
        values = decoded(await ask(listener, at["sl"], Code.GET, "/3416/0"), "/3416/0")
        assert values["/3416/0/3"] == 55 and values["/3416/0/53"] == 3600

        # Execute /3435/0/9: the crew emptied the bin; the collection counter counts it.
        bin_ = simulation.device(next(d.endpoint for d in simulation.devices if d.kind == "waste_bin"))
        before = decoded(await ask(listener, at["wb"], Code.GET, "/3435/0"), "/3435/0")
        response = await ask(listener, at["wb"], Code.POST, "/3435/0/9")
        assert response.code == Code.CHANGED
        after = decoded(await ask(listener, at["wb"], Code.GET, "/3435/0"), "/3435/0")
        assert after["/3435/0/2"] < 3.5 and after["/3435/0/19"] == before["/3435/0/19"] + 1
        assert bin_.fill_percentage() < 3.5


async def test_discover_lists_the_instance(db, listener, seoul, tmp_path):
    devices_file = await provision(seoul, tmp_path, {"waste_bin": 1})
    async with running(config(listener, devices_file, counts={"waste_bin": 1})):
        bin_ = (await eventually(lambda: registered(db, 1)))["wb"]
        response = await ask(listener, bin_, Code.GET, "/3435/0", accept=40)
        paths = [link.path for link in linkformat.parse(bytes(response.payload))]
        assert paths[0] == "/3435/0" and "/3435/0/2" in paths and "/3435/0/9" in paths


async def test_observe_notifies_changes_until_cancelled(db, listener, seoul, tmp_path):
    devices_file = await provision(seoul, tmp_path, {"streetlight": 1})
    async with running(config(listener, devices_file, counts={"streetlight": 1}, start=NOON)) as simulation:
        light = (await eventually(lambda: registered(db, 1)))["sl"]
        observe = Message(code=Code.GET, uri=light.uri(ResourcePath(3416, 0, 3)), observe=0)
        request = listener.context.request(observe)
        first = await request.response
        assert first.opt.observe is not None and decoded(first, "/3416/0/3") == {"/3416/0/3": 0}
        notifications = aiter(request.observation)

        await ask(listener, light, Code.PUT, "/3416/0/1", payload=b"80", content_format=0)
        notification = await asyncio.wait_for(anext(notifications), 5)
        assert decoded(notification, "/3416/0/3") == {"/3416/0/3": 80}
        assert notification.token == first.token

        # aiocoap forgets a cancelled observation on the next notification and answers the
        # one after with RST, which ends it on the device.
        request.observation.cancel()
        device = simulation.devices[0]
        for level in (20, 30, 40):
            await ask(listener, light, Code.PUT, "/3416/0/1", payload=str(level).encode(),
                      content_format=0)
            await asyncio.sleep(0.3)
        assert not device.link.observations


async def test_reboot_registers_again(db, listener, seoul, tmp_path):
    devices_file = await provision(seoul, tmp_path, {"wifi_ap": 1})
    async with running(config(listener, devices_file, counts={"wifi_ap": 1})) as simulation:
        ap = (await eventually(lambda: registered(db, 1)))["ap"]
        response = await ask(listener, ap, Code.POST, "/3/0/4")
        assert response.code == Code.CHANGED
        await eventually(lambda: simulation.stats.registrations == 2)


async def test_forced_faults_show_in_what_devices_report(db, listener, seoul, tmp_path):
    counts = {"streetlight": 1, "waste_bin": 1}
    devices_file = await provision(seoul, tmp_path, counts)
    faults = FaultPlan.parse(["lamp_failure=1", "overflow=1", "fire=1", "knockover=1"])
    async with running(config(listener, devices_file, counts=counts, faults=faults,
                              speed=600)) as simulation:
        at = await eventually(lambda: registered(db, 2))
        light, bin_ = (simulation.device(d.endpoint) for d in simulation.devices)

        async def struck():
            return simulation.stats.faults.get("lamp_failure") and simulation.stats.faults.get("knockover")

        await eventually(struck)
        lamp = decoded(await ask(listener, at["sl"], Code.GET, "/3416/0"), "/3416/0")
        assert lamp["/3416/0/3"] == 100 and lamp["/3416/0/5"] is True and lamp["/3416/0/46"] == 0
        monitor = decoded(await ask(listener, at["sl"], Code.GET, "/3418/0/4"), "/3418/0/4")
        assert monitor["/3418/0/4"] < 2  # standby only
        filling = decoded(await ask(listener, at["wb"], Code.GET, "/3435/0"), "/3435/0")
        assert filling["/3435/0/2"] > 100 and filling["/3435/0/5"] is True
        assert filling["/3435/0/13"] is True  # knocked over

        async def burning():
            values = decoded(await ask(listener, at["wb"], Code.GET, "/3435/0/22"), "/3435/0/22")
            return values["/3435/0/22"]  # the temperature alarm: above 60 degrees

        await eventually(burning)  # a fire takes ten simulated minutes to flare up
        assert bin_.temperature() > 60
        assert light.lamp_failed and bin_.overflowing


async def test_day_burner_lights_the_lamp_at_noon(db, listener, seoul, tmp_path):
    devices_file = await provision(seoul, tmp_path, {"streetlight": 1})
    faults = FaultPlan.parse(["day_burner=1"])
    async with running(config(listener, devices_file, counts={"streetlight": 1}, start=NOON,
                              faults=faults)) as simulation:
        light = (await eventually(lambda: registered(db, 1)))["sl"]
        await eventually(lambda: simulation.stats.faults.get("day_burner"))
        values = decoded(await ask(listener, light, Code.GET, "/3416/0"), "/3416/0")
        assert values["/3416/0/2"] == 0 and values["/3416/0/3"] == 100 and values["/3416/0/10"] is True
        assert values["/3416/0/46"] > 0

