"""A simulated fleet against the real server: provisioning over REST, registration, telemetry,
downlink Write, silent devices going offline, malformed datagrams refused, forced faults in the
state Fleet keeps and a repair on site taking them away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from aiocoap import Code, Message

from fleet.objectmodel import ResourcePath
from protocols.lwm2m.downlink import DeviceAddress
from simulators.faults import FaultPlan
from simulators.simulation import SimulationConfig
from tests.simulators.conftest import eventually, running

SEOUL = ZoneInfo("Asia/Seoul")
EVENING = datetime(2026, 11, 24, 20, 0, tzinfo=SEOUL)  # dark: sunset is 17:16
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=SEOUL)


def config(listener, api_url: str, city, **overrides) -> SimulationConfig:
    settings = dict(counts={"streetlight": 5, "waste_bin": 5, "wifi_ap": 3},
                    server=f"coap://127.0.0.1:{listener.port}", api=api_url, key=city.key,
                    provision=True, seed=7, speed=60, start=EVENING, progress_s=0,
                    register_rate=1000)
    return SimulationConfig(**(settings | overrides))


async def statuses(db) -> dict[str, str]:
    async with db.system_tx() as conn:
        return {r["endpoint"]: r["status"] for r in await conn.fetch("select endpoint, status from devices")}


async def latest(db, endpoint: str) -> dict[str, object]:
    """The device's latest value per path, from the state the server keeps."""
    async with db.system_tx() as conn:
        rows = await conn.fetch(
            """select s.path, s.v_num, s.v_text, s.v_bool from device_state s
               join devices d on d.id = s.device_id where d.endpoint = $1""", endpoint)
    return {r["path"]: next((v for v in (r["v_bool"], r["v_num"], r["v_text"]) if v is not None), None)
            for r in rows}


async def telemetry_paths(db, endpoint: str) -> set[str]:
    async with db.system_tx() as conn:
        rows = await conn.fetch("""select distinct t.path from telemetry t join devices d on d.id = t.device_id
                                   where d.endpoint = $1""", endpoint)
    return {r["path"] for r in rows}


async def registration(db, endpoint: str) -> DeviceAddress:
    async with db.system_tx() as conn:
        row = await conn.fetchrow("select address, port from registrations where endpoint = $1", endpoint)
    return DeviceAddress(row["address"], row["port"])


async def test_provisioned_fleet_registers_and_reports(db, listener, city_factory, api_url):
    city = await city_factory("seoul")
    async with running(config(listener, api_url, city)) as simulation:
        endpoints = [d.endpoint for d in simulation.devices]
        assert len(endpoints) == 13 and all(e.startswith("seoul-sim-") for e in endpoints)

        async def all_reported():
            # Every value each device sends, not just what the server read from /3/0.
            states = {d.endpoint: await latest(db, d.endpoint) for d in simulation.devices}
            return all({str(p) for p in d.reported} <= states[d.endpoint].keys()
                       for d in simulation.devices) and states

        states = await eventually(all_reported)
        assert set((await statuses(db)).values()) == {"online"}
        # The server reads /3/0 after each registration and records what the device says.
        rows = await eventually(lambda: _device_info(db))

    for light in (d for d in simulation.devices if d.kind == "streetlight"):
        state = states[light.endpoint]
        assert state["/3416/0/3"] == 100  # lit in the evening
        assert abs(state["/3418/0/4"] - light.nominal_w) <= 0.031 * light.nominal_w
        assert state["/3418/0/6"] > 0 and state["/3416/0/15"] > 0
    for bin_ in (d for d in simulation.devices if d.kind == "waste_bin"):
        state = states[bin_.endpoint]
        assert 0 <= state["/3435/0/2"] <= 100
        assert -20 < state["/3303/0/5700"] < 25  # a November evening
        assert state["/3429/0/1"] < 0.5 and state["/3429/0/6"] is False
    for ap in (d for d in simulation.devices if d.kind == "wifi_ap"):
        state = states[ap.endpoint]
        assert state["/12/0/3"] == 1 and state["/12/0/33"] > state["/12/0/34"] > 0

    assert {(r["kind"], r["manufacturer"], r["model"], r["firmware_version"]) for r in rows} == {
        ("streetlight", "Lumen Korea", "LK-120", "3.2.1"), ("waste_bin", "CleanCity", "CC-S240", "1.8.0"),
        ("wifi_ap", "AirLink", "AL-6E", "5.0.3")}
    # Shutdown de-registered every device.
    assert set((await statuses(db)).values()) == {"offline"}
    assert simulation.stats.deregistered == 13 and simulation.stats.sends_failed == 0


async def _device_info(db) -> list | None:
    """Device rows once every device's firmware version is known (provisioning leaves it out)."""
    async with db.system_tx() as conn:
        rows = await conn.fetch("select kind, manufacturer, model, firmware_version from devices")
    return rows if all(r["firmware_version"] for r in rows) else None


async def test_a_second_run_uses_the_provisioned_devices(db, listener, city_factory, api_url):
    city = await city_factory("seoul")
    async with running(config(listener, api_url, city, counts={"streetlight": 2, "waste_bin": 0, "wifi_ap": 1})):
        pass
    async with running(config(listener, api_url, city, provision=False,
                              counts={"streetlight": 5, "waste_bin": 0, "wifi_ap": 1})) as simulation:
        # Without --provision only what the city already has is simulated.
        assert sorted(d.endpoint for d in simulation.devices) == [
            "seoul-sim-ap-00001", "seoul-sim-sl-00001", "seoul-sim-sl-00002"]
        await eventually(lambda: _all_online(db, 3))


async def _all_online(db, count: int) -> bool:
    values = list((await statuses(db)).values())
    return len(values) == count and set(values) == {"online"}


async def test_server_write_changes_level_and_power(db, listener, city_factory, api_url):
    city = await city_factory("seoul")
    settings = config(listener, api_url, city, counts={"streetlight": 1, "waste_bin": 0, "wifi_ap": 0},
                      start=NOON, speed=10)
    async with running(settings) as simulation:
        light = simulation.devices[0]
        await eventually(lambda: _has(db, light.endpoint, "/3416/0/3", 0))
        address = await registration(db, light.endpoint)

        write = Message(code=Code.PUT, uri=address.uri(ResourcePath(3416, 0, 1)), payload=b"70",
                        content_format=0)
        response = await listener.context.request(write).response
        assert response.code == Code.CHANGED, response.payload

        state = await eventually(lambda: _has(db, light.endpoint, "/3416/0/3", 70))
        assert abs(state["/3418/0/4"] - 0.7 * light.nominal_w) <= 0.031 * 0.7 * light.nominal_w
        assert abs(state["/3416/0/46"] - 0.7 * light.nominal_w) <= 0.031 * 0.7 * light.nominal_w
        readings = await listener.client.read(address, ResourcePath(3416, 0))
        values = {str(r.path): r.value for r in readings}
        assert values["/3416/0/1"] == 70 and values["/3416/0/54"] is True

        # Writing off the range the object defines is refused.
        bad = Message(code=Code.PUT, uri=address.uri(ResourcePath(3416, 0, 1)), payload=b"170",
                      content_format=0)
        assert (await listener.context.request(bad).response).code == Code.BAD_REQUEST


async def _has(db, endpoint: str, path: str, value) -> dict | None:
    state = await latest(db, endpoint)
    return state if state.get(path) == value else None


async def test_silent_device_goes_offline_after_its_lifetime(db, listener, city_factory, api_url):
    city = await city_factory("seoul")
    settings = config(listener, api_url, city, counts={"streetlight": 2, "waste_bin": 1, "wifi_ap": 0},
                      lifetime_s=2, faults=FaultPlan.parse(["silent=0.3"]))
    async with running(settings) as simulation:
        silent = [d.endpoint for d in simulation.devices if "silent" in d.faults.forced]
        assert len(silent) == 1
        await eventually(lambda: _has_status(db, silent[0], "offline"), timeout_s=15)
        # The others keep updating within their 2 s lifetime and stay online.
        others = await statuses(db)
        assert [s for e, s in others.items() if e != silent[0]] == ["online", "online"]
        assert simulation.stats.updates >= 2


async def _has_status(db, endpoint: str, status: str) -> bool:
    return (await statuses(db)).get(endpoint) == status


async def test_malformed_datagrams_are_refused_and_store_nothing(db, listener, city_factory, api_url):
    city = await city_factory("seoul")
    settings = config(listener, api_url, city, counts={"streetlight": 0, "waste_bin": 1, "wifi_ap": 0},
                      faults=FaultPlan.parse(["malformed=1"]), speed=900)
    async with running(settings) as simulation:
        stats = simulation.stats
        await eventually(lambda: stats.malformed_rejected >= 3)
        endpoint = simulation.devices[0].endpoint
        # Only what the server read itself from /3/0 is stored; no Send got through.
        assert {p.split("/")[1] for p in await telemetry_paths(db, endpoint)} == {"3"}
    assert stats.sends == 0 and stats.malformed_rejected == stats.malformed_sent


async def test_forced_faults_reach_the_device_state_and_a_repair_clears_them(db, listener, city_factory, api_url):
    city = await city_factory("seoul")
    settings = config(listener, api_url, city, counts={"streetlight": 1, "waste_bin": 1, "wifi_ap": 1},
                      start=NOON, speed=10,
                      faults=FaultPlan.parse(["day_burner=1", "overflow=1", "ap_down=1", "clock_skew=1"]))
    async with running(settings) as simulation:
        by_kind = {d.kind: d for d in simulation.devices}
        light, bin_, ap = by_kind["streetlight"], by_kind["waste_bin"], by_kind["wifi_ap"]
        # A day burner at noon: lit at full level, drawing full power, its Day burner flag set.
        state = await eventually(lambda: _has(db, light.endpoint, "/3416/0/3", 100))
        assert state["/3416/0/10"] is True and state["/3418/0/4"] > 0.9 * light.nominal_w
        state = await eventually(lambda: _above(db, bin_.endpoint, "/3435/0/2", 100))
        assert state["/3435/0/5"] is True
        state = await eventually(lambda: _has(db, ap.endpoint, "/12/0/3", 2))
        # Every device's clock is hours off, and says so in its Sends.
        for endpoint in (light.endpoint, bin_.endpoint, ap.endpoint):
            state = await eventually(lambda e=endpoint: _clock_off(db, e))

        # The crew fixes the light and resets its error code: its next report shows it dark by day.
        address = await registration(db, light.endpoint)
        repair = Message(code=Code.POST, uri=address.uri(ResourcePath(3, 0, 12)))
        assert (await listener.context.request(repair).response).code == Code.CHANGED
        state = await eventually(lambda: _has(db, light.endpoint, "/3416/0/3", 0))
        assert state["/3416/0/10"] is False
    assert {"day_burner", "overflow", "ap_down", "clock_skew"} <= set(simulation.stats.faults)


async def _above(db, endpoint: str, path: str, value: float) -> dict | None:
    state = await latest(db, endpoint)
    return state if (state.get(path) or 0) > value else None


async def _clock_off(db, endpoint: str) -> bool:
    async with db.system_tx() as conn:
        row = await conn.fetchrow(
            """select s.v_num, s.v_text, s.time from device_state s join devices d on d.id = s.device_id
               where d.endpoint = $1 and s.path = '/3/0/13'""", endpoint)
    if row is None:
        return False
    reported = (datetime.fromtimestamp(row["v_num"], UTC) if row["v_num"] is not None
                else datetime.fromisoformat(row["v_text"]))
    return abs(reported - row["time"]) > timedelta(hours=1.9)
