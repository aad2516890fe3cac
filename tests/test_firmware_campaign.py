"""Firmware campaigns end to end, over real UDP and real HTTP against real PostgreSQL: a city
uploads a signed image and runs campaigns over REST; Fleet's listener and the scheduler's leader
roll it out to simulated streetlights, bins and access points that download (Block2) or take a
push (Block1), install, reboot and come back on the new version; failures abort a campaign,
a rollback is named, a window holds installs back, and a node restarted mid-wave loses nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.runtime import alarm_service
from fleet.campaigns import rollout_steps
from fleet.campaigns.rollout import CampaignJobs
from fleet.scheduling.leader import LeaderElection
from protocols.lwm2m.listener import Listener, open_listener
from simulators import firmware_transfer, inventory
from simulators.faults import FaultPlan
from simulators.firmware import build_image
from simulators.simulation import SimulationConfig
from tests.conftest import City, make_city, serve_api
from tests.fleet.campaigns.rollout_env import Clock
from tests.protocols.lwm2m.firmware_rows import downloading
from tests.protocols.test_libcoap_interop import coap_client, coap_client_binary  # noqa: F401 - a fixture
from tests.simulators.conftest import eventually, running

CAMPAIGNS = "/api/v1/firmware/campaigns"
NEW = "4.0.0"
IMAGE = build_image(NEW, 6000)
WAIT_S = 30.0
# Short enough for a test, long enough that "healthy for a while" is still checked.
QUICK = {"health_period_s": 3, "timeouts": {"download_s": 60, "install_s": 30, "token_s": 600}}
FULL_TIMELINE = ["pending", "waiting", "downloading", "downloaded", "installing", "verifying", "succeeded"]


@pytest.fixture(autouse=True)
def quick_installs(monkeypatch):
    # Installing and booting take moments, not seconds, so a campaign ends sooner.
    monkeypatch.setattr(firmware_transfer, "INSTALL_S", 0.3)
    monkeypatch.setattr(firmware_transfer, "BOOT_S", 0.5)
    # An observed device quiet this long is read too (its observation may have died with a node).
    monkeypatch.setattr(rollout_steps, "QUIET_S", 2)
    # A device that does not notify is read every second rather than every ten.
    monkeypatch.setattr(rollout_steps, "POLL_S", 1)


@dataclass
class Node:
    """One Fleet node: the listener as `fleet serve` opens it (registrations, the dispatcher, /fw
    downloads) and a real scheduler leader running the rollout (`CampaignJobs`, as run_scheduler
    composes it, here with a clock the window test can set)."""

    listener: Listener
    clock: Clock


@contextlib.asynccontextmanager
async def fleet_node(db, port: int = 0, clock: Clock | None = None) -> AsyncIterator[Node]:
    alarms = alarm_service(db)
    clock = clock or Clock()
    async with open_listener(db, "::", port, sweep_interval_s=0.2, alarm_service=alarms) as listener:
        jobs = CampaignJobs(db, download_base_uri=f"coap://127.0.0.1:{listener.port}", alarm_service=alarms,
                            clock=clock, interval_s=0.2)
        leader = asyncio.create_task(LeaderElection(db, f"node-{listener.port}", retry_s=0.2).run(jobs.lead))
        try:
            yield Node(listener, clock)
        finally:
            leader.cancel()
            await asyncio.gather(leader, return_exceptions=True)


@dataclass
class CityApi:
    """A city as its control room reaches Fleet: over REST, with its signed image uploaded."""

    city: City
    client: httpx.AsyncClient
    image_id: str


@pytest.fixture
async def city(db) -> AsyncIterator[CityApi]:
    """A city over REST: its release key, and the signed image of version NEW."""
    city = await make_city(db, "seoul")
    async with serve_api(db) as api, httpx.AsyncClient(
            base_url=api, headers={"Authorization": f"Bearer {city.key}"}, timeout=30) as client:
        key = Ed25519PrivateKey.generate()
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        answer = await client.post("/api/v1/firmware/keys", json={"name": "release", "public_key": pem})
        assert answer.status_code == 201, answer.text
        answer = await client.post("/api/v1/firmware/images", files={"file": ("fw.bin", IMAGE)}, data={
            "version": NEW, "models": "", "notes": "e2e", "signature": base64.b64encode(key.sign(IMAGE)).decode()})
        assert answer.status_code == 201, answer.text
        yield CityApi(city, client, answer.json()["id"])


async def provision(city: CityApi, tmp_path: Path, counts: dict[str, int]) -> Path:
    """The devices imported over REST, and the simulator's devices file naming them."""
    specs = [spec for kind, count in counts.items()
             for spec in inventory.plan(city.city.slug, kind, range(1, count + 1), 5)]
    body = inventory.import_csv(specs)
    answer = await city.client.post("/api/v1/devices/import", content=body.encode(),
                                    headers={"Content-Type": "text/csv"})
    assert answer.status_code == 201, answer.text
    path = tmp_path / "devices.csv"
    path.write_text(body)
    return path


def simulation(node: Node | int, path: Path, counts: dict[str, int], *faults: str, **options) -> SimulationConfig:
    port = node if isinstance(node, int) else node.listener.port
    return SimulationConfig(counts=counts, server=f"coap://127.0.0.1:{port}", devices_file=path,
                            seed=5, progress_s=0, faults=FaultPlan.parse(list(faults)),
                            # A registration update every ~2.5 s: a health period of 3 s hears
                            # from each device (they Send only what changed, often nothing).
                            lifetime_s=3,
                            # Fleet may be gone when the simulation ends: de-register briefly.
                            deregister_timeout_s=1, **options)


async def device_ids(city: CityApi) -> dict[str, str]:
    answer = await city.client.get("/api/v1/devices", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return {d["endpoint"]: d["id"] for d in answer.json()["items"]}


async def all_registered(db, count: int) -> bool:
    async with db.system_tx() as conn:
        return await conn.fetchval("select count(*) from registrations r join devices d on d.id = r.device_id "
                                   "where d.firmware_version is not null") == count


async def create_campaign(city: CityApi, ids, **settings) -> dict:
    answer = await city.client.post(CAMPAIGNS, json={"image_id": city.image_id, "target": {"device_ids": list(ids)},
                                                     **(QUICK | settings)})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def start(city: CityApi, campaign: dict) -> dict:
    answer = await city.client.post(f"{CAMPAIGNS}/{campaign['id']}/start")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def shown(city: CityApi, campaign: dict) -> dict:
    answer = await city.client.get(f"{CAMPAIGNS}/{campaign['id']}")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def devices_of(city: CityApi, campaign: dict) -> list[dict]:
    answer = await city.client.get(f"{CAMPAIGNS}/{campaign['id']}/devices", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


async def finished(city: CityApi, campaign: dict, statuses=("completed",)) -> dict | None:
    now = await shown(city, campaign)
    return now if now["status"] in statuses and not now["counts"].get("installing") \
        and not now["counts"].get("verifying") else None


async def until_finished(db, city: CityApi, campaign: dict, statuses=("completed",), timeout_s: float = 60) -> dict:
    """The campaign once it ended (no device installing or verifying); failing, what each
    device of it was at, so a failure in CI says where the rollout stopped."""
    try:
        return await eventually(lambda: finished(city, campaign, statuses), timeout_s=timeout_s)
    except AssertionError as exc:
        now = await shown(city, campaign)
        states = [(d["endpoint"], d["state"], d["reason"], d["detail"]) for d in await devices_of(city, campaign)]
        async with db.system_tx() as conn:
            commands = [tuple(r) for r in await conn.fetch(
                """select d.endpoint, c.operation, c.path, c.status, c.attempts, c.error,
                          to_char(c.created_at, 'MI:SS.MS'), to_char(c.sent_at, 'MI:SS.MS')
                   from commands c join devices d on d.id = c.device_id order by c.created_at""")]
        raise AssertionError(f"campaign {now['status']} ({now['status_reason']}): {states}; "
                             f"commands: {commands}") from exc


async def timeline(city: CityApi, campaign: dict, device_id: str) -> list[str]:
    answer = await city.client.get(f"{CAMPAIGNS}/{campaign['id']}/devices/{device_id}")
    assert answer.status_code == 200, answer.text
    return [step["state"] for step in answer.json()["timeline"]]


async def executes(db, campaign: dict, paths: tuple[str, ...] = ("/5/0/2",)) -> dict[str, int]:
    """Steps on `paths` the campaign asked for (by default Updates: Execute /5/0/2), per device."""
    async with db.system_tx() as conn:
        rows = await conn.fetch(
            """select c.device_id::text as device_id, count(*) as n from commands c
               join command_batches b on b.id = c.batch_id
               where b.origin = $1 and c.path = any($2::text[]) group by c.device_id""",
            f"firmware:{campaign['id']}", list(paths))
    return {r["device_id"]: r["n"] for r in rows}


async def versions(db) -> dict[str, str]:
    """/3/0/3 as Fleet last heard it, per device."""
    async with db.system_tx() as conn:
        rows = await conn.fetch("select device_id::text, v_text from device_state where path = '/3/0/3'")
    return {r["device_id"]: r["v_text"] for r in rows}


async def test_a_mixed_fleet_updates_in_waves_pulled_and_pushed(db, city, tmp_path):
    counts = {"streetlight": 4, "waste_bin": 3, "wifi_ap": 3}
    path = await provision(city, tmp_path, counts)
    async with fleet_node(db) as node, running(simulation(node, path, counts)) as sim:
        await eventually(lambda: all_registered(db, 10), timeout_s=WAIT_S)
        ids = await device_ids(city)
        campaign = await create_campaign(city, ids.values(), waves={"canary": 1, "growth": 2})
        assert (campaign["device_count"], campaign["wave_count"]) == (10, 4)
        await start(city, campaign)
        done = await until_finished(db, city, campaign)
        assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (done["device_count"], 0), done["counts"]
        # Each by the method its model offers: lights and bins pull (1 KiB and 512-byte blocks), APs take a push.
        delivery = {d["endpoint"].split("-")[-2]: d["delivery"] for d in await devices_of(city, campaign)}
        assert delivery == {"sl": "pull", "wb": "pull", "ap": "push"}
        heard = await versions(db)
        assert {heard[i] for i in ids.values()} == {NEW}
        assert await executes(db, campaign) == {i: 1 for i in ids.values()}
        for device_id in ids.values():
            assert await timeline(city, campaign, device_id) == FULL_TIMELINE
        assert sim.stats.fw_updated == 10


async def test_failures_abort_the_campaign_by_itself_and_a_rollback_is_named(db, city, tmp_path):
    counts = {"streetlight": 6}
    path = await provision(city, tmp_path, counts)
    async with fleet_node(db) as node, running(simulation(node, path, counts)) as sim:
        await eventually(lambda: all_registered(db, 6), timeout_s=WAIT_S)
        ids = await device_ids(city)
        campaign = await create_campaign(city, ids.values(), waves={"canary": 3, "size": 3},
                                         thresholds={"error_percent": 50, "error_min_count": 3, "on_error": "abort"})
        members = await devices_of(city, campaign)
        canary = [d["endpoint"] for d in members if d["wave"] == 0]
        later = [d["device_id"] for d in members if d["wave"] == 1]
        # The canary fails: one comes back on its old version, the others fail to install.
        sim.device(canary[0]).faults.forced = ("fw_rollback",)
        for endpoint in canary[1:]:
            sim.device(endpoint).faults.forced = ("fw_install_fail",)
        await start(city, campaign)

        done = await until_finished(db, city, campaign, statuses=("aborted",))
        assert "error threshold" in done["status_reason"], done["status_reason"]
        assert (done["counts"]["failed"], done["counts"]["cancelled"], done["counts"]["succeeded"]) == (3, 3, 0)
        by_endpoint = {d["endpoint"]: d for d in await devices_of(city, campaign)}
        assert by_endpoint[canary[0]]["reason"] == "rolled_back"
        assert {by_endpoint[e]["reason"] for e in canary[1:]} == {"install_failed"}
        assert {by_endpoint[e]["state"] for e in by_endpoint if e not in canary} == {"cancelled"}
        # Not yet started: never told anything.
        assert not set(await executes(db, campaign)) & set(later)

        answer = await city.client.get("/api/v1/alarms", params={"type": "firmware_update_failed"})
        assert answer.status_code == 200, answer.text
        alarmed = {a["device_id"] for a in answer.json()["items"]}
        assert alarmed == {ids[e] for e in canary}
        assert sim.stats.fw_updated == 0
        assert (await versions(db))[ids[canary[0]]] != NEW



async def test_a_node_restarted_mid_wave_loses_nothing_and_installs_nothing_twice(db, city, tmp_path):
    counts = {"streetlight": 3, "waste_bin": 3, "wifi_ap": 2}
    path = await provision(city, tmp_path, counts)
    first = fleet_node(db)
    port = (await first.__aenter__()).listener.port
    first_running = True
    try:
        # A slow link: blocks 0.2 s apart, so downloads are under way when the node stops.
        async with running(simulation(port, path, counts, "fw_slow=1")) as sim:
            await eventually(lambda: all_registered(db, 8), timeout_s=WAIT_S)
            ids = await device_ids(city)
            campaign = await create_campaign(city, ids.values(), waves={"canary": 2, "growth": 3})
            await start(city, campaign)

            async def mid_wave() -> bool:
                now = (await shown(city, campaign))["counts"]
                return now["succeeded"] >= 1 and now["downloading"] + now["installing"] >= 1

            await eventually(mid_wave, timeout_s=WAIT_S)
            # The node stops (listener and scheduler's leader); the devices keep going, and a new
            # node on the same database and port carries on.
            first_running = False
            await first.__aexit__(None, None, None)
            blocks_before = sim.stats.fw_blocks
            async with fleet_node(db, port):
                done = await until_finished(db, city, campaign)
            assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (8, 0), done["counts"]
            assert await executes(db, campaign) == {i: 1 for i in ids.values()}
            # Downloads carried on from where they were: each package delivered once.
            assert await executes(db, campaign, ("/5/0/1", "/5/0/0")) == {i: 1 for i in ids.values()}
            assert sim.stats.fw_updated == 8
            assert sim.stats.fw_blocks > blocks_before
            heard = await versions(db)
            assert {heard[i] for i in ids.values()} == {NEW}
    finally:
        if first_running:
            await first.__aexit__(None, None, None)


async def test_installs_wait_for_the_window_and_happen_once_it_opens(db, city, tmp_path):
    """The campaign's window opened a minute ago in the city's time; the engine's clock starts
    ten minutes behind (before the window) and is then set right: the window opens for it."""
    counts = {"streetlight": 1, "waste_bin": 1, "wifi_ap": 1}
    path = await provision(city, tmp_path, counts)
    local = datetime.now(ZoneInfo("Asia/Seoul")).replace(second=0, microsecond=0) - timedelta(minutes=1)
    window = {"start": f"{local:%H:%M}", "end": f"{local + timedelta(hours=1):%H:%M}"}
    clock = Clock()
    clock.offset = -timedelta(minutes=10)
    async with fleet_node(db, clock=clock) as node, running(simulation(node, path, counts)) as sim:
        await eventually(lambda: all_registered(db, 3), timeout_s=WAIT_S)
        ids = await device_ids(city)
        campaign = await create_campaign(city, ids.values(), waves={"canary": 3, "size": 1}, window=window)
        await start(city, campaign)

        async def all_downloaded() -> bool:
            return (await shown(city, campaign))["counts"]["downloaded"] == 3

        await eventually(all_downloaded, timeout_s=WAIT_S)
        # Nothing to wait for but passes of the engine that must not install: a few of them.
        await asyncio.sleep(1.0)
        assert (await shown(city, campaign))["counts"]["downloaded"] == 3
        assert await executes(db, campaign) == {} and sim.stats.fw_updated == 0

        node.clock.offset = timedelta()  # the window is open
        done = await until_finished(db, city, campaign)
        assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (3, 0), done["counts"]
        assert await executes(db, campaign) == {i: 1 for i in ids.values()}
        for device_id in ids.values():
            assert await timeline(city, campaign, device_id) == FULL_TIMELINE


async def test_an_independent_coap_client_downloads_a_package(db, city, tmp_path, coap_client_binary):
    """libcoap's client fetches a Package URI block-wise (64-byte blocks) and gets the image's
    exact bytes from Fleet's listener, as a device's own CoAP stack would."""
    await provision(city, tmp_path, {"streetlight": 1})
    (device_id,) = (await device_ids(city)).values()
    async with fleet_node(db) as node:
        token = await downloading(db, city.city.tenant_id, UUID(device_id), UUID(city.image_id))
        out = tmp_path / "package.bin"
        code, output = await coap_client(coap_client_binary, "-b", "64", "-o", str(out),
                                         f"coap://127.0.0.1:{node.listener.port}/fw/{token}")
        assert code == 0, output
        assert out.read_bytes() == IMAGE
        assert node.listener.server.downloads.blocks_served == -(-len(IMAGE) // 64)


async def test_a_sleeping_device_and_one_that_cannot_be_observed_get_their_steps(db, city, tmp_path, monkeypatch):
    """A bin in queue mode (binding UQ) is sent each step when it next registers or updates; a
    streetlight that answers Observe on object 5 as a plain read has its states read."""
    # The light's states are read every POLL_S (10 s in service): every 2 s, the test takes
    # seconds, not most of a minute.
    monkeypatch.setattr(rollout_steps, "POLL_S", 2)
    counts = {"streetlight": 1, "waste_bin": 1}
    path = await provision(city, tmp_path, counts)
    light, sleeper = (inventory.endpoint_name(city.city.slug, kind, 1) for kind in counts)
    async with fleet_node(db) as node, running(simulation(
            node, path, counts, queue_mode=frozenset({sleeper}), unobservable_firmware=frozenset({light}))):
        await eventually(lambda: all_registered(db, 2), timeout_s=WAIT_S)
        ids = await device_ids(city)
        async with db.system_tx() as conn:
            bindings = dict(await conn.fetch("select endpoint, binding from registrations"))
        assert bindings == {light: "U", sleeper: "UQ"}
        campaign = await create_campaign(city, ids.values(), waves={"canary": 2, "size": 1})
        await start(city, campaign)
        done = await until_finished(db, city, campaign)
        assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (2, 0), done["counts"]
        assert await executes(db, campaign) == {i: 1 for i in ids.values()}
        for device_id in ids.values():
            assert await timeline(city, campaign, device_id) == FULL_TIMELINE
        async with db.system_tx() as conn:
            steps = await conn.fetch(
                """select d.endpoint, c.operation, c.path, c.status from commands c
                   join devices d on d.id = c.device_id order by c.created_at""")
        # The light: its Observe refused, object 5 read, then /5/0/3 read until Downloaded.
        light_steps = [(s["operation"], s["path"], s["status"]) for s in steps if s["endpoint"] == light]
        assert light_steps[:2] == [("observe", "/5/0", "failed"), ("read", "/5/0", "succeeded")]
        assert ("read", "/5/0/3", "succeeded") in light_steps
        # The sleeper: each step went out, once it had woken up (the end of its observation waits
        # for its next wake-up).
        assert [(s["operation"], s["path"], s["status"]) for s in steps
                if s["endpoint"] == sleeper and s["operation"] not in ("read", "cancel_observe")] == [
            ("observe", "/5/0", "succeeded"), ("write", "/5/0/1", "succeeded"), ("execute", "/5/0/2", "succeeded")]
