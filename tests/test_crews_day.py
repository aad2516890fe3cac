"""A crew's day end to end, over real UDP and real HTTP against real PostgreSQL: a streetlight's
lamp failure becomes an alarm, the city's rule makes it a work order, a crew takes it to done, and
the light's own next report proves the repair (or reopens it); a citizen's report of the same
lamp joins that alarm and work order, and live events and the tablet's sync see it all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import aiocoap
import httpx
import pytest

from api.runtime import alarm_service
from fleet.alarms.evaluator import RuleEvaluator
from fleet.workorders.automation import open_for_alarms
from protocols.lwm2m.listener import Listener, open_listener
from tests.api.test_events import Message, Sse
from tests.conftest import City, make_city, serve_api
from tests.protocols.devices import MiniDevice

LAMP = (37.5665, 126.9780)
WAIT_S = 10.0
CONTRACT = {"id", "type", "severity", "status", "device_id", "count", "first_seen", "last_seen"}
LAMP_RULE = {"alarm_types": ["lamp_failure"], "work_order_type": "repair_lamp", "min_severity": "major",
             "unacknowledged_minutes": 0, "priority": "high"}


async def eventually(probe: Callable[[], object], what: str, timeout_s: float = WAIT_S):
    """Poll `probe` (plain or async) until it returns something truthy; fail naming `what` after
    `timeout_s`."""
    async def first():
        while True:
            found = probe()
            if isinstance(found, Awaitable):
                found = await found
            if found:
                return found
            await asyncio.sleep(0.05)
    try:
        return await asyncio.wait_for(first(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"still waiting for {what} after {timeout_s} s") from None


@dataclass
class Street:
    """Fleet as `fleet serve` composes it (api.runtime): the app, and the listener whose rules
    hand findings to the same alarm service the app uses."""

    listener: Listener
    api: str
    city: City
    admin: httpx.AsyncClient


@pytest.fixture
async def street(db) -> AsyncIterator[Street]:
    alarms = alarm_service(db)
    rules = RuleEvaluator(db, alarms.apply, settings=alarms.effective_settings)
    city = await make_city(db, "seoul")
    async with (open_listener(db, "::", 0, expiry_grace=timedelta(seconds=0), alarm_service=alarms,
                              rules=rules) as listener,
                serve_api(db) as api,
                httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {city.key}"}) as admin):
        # Without hysteresis a repaired lamp's first good report clears at once.
        answer = await admin.put("/api/v1/alarms/settings", json={"clear_after_minutes": 0})
        assert answer.status_code == 200, answer.text
        answer = await admin.put("/api/v1/workorders/rules", json={"alarm_rules": [LAMP_RULE]})
        assert answer.status_code == 200, answer.text
        yield Street(listener, api, city, admin)


class Streetlight(MiniDevice):
    """A light controller on its own UDP socket reporting its lamp (3416) by LwM2M Send."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint)
        self.add("/3416/0/5", False)
        self.add("/3416/0/3", 100)

    async def deregister(self, port: int):
        request = aiocoap.Message(code=aiocoap.Code.DELETE, uri=f"coap://127.0.0.1:{port}/{'/'.join(self.location)}")
        return await self.context.request(request).response

    async def report(self, port: int, *, lamp_failure: bool) -> None:
        answer = await self.send(port, [{-2: "/3416/0/", 0: "5", 4: lamp_failure}, {0: "3", 2: 100}])
        assert answer.code.is_successful(), answer



@pytest.fixture
async def lamp(street) -> AsyncIterator[tuple[dict, Streetlight]]:
    """A streetlight Fleet knows, registered over UDP."""
    answer = await street.admin.post("/api/v1/devices", json={
        "kind": "streetlight", "endpoint": "jung-gu-lamp-1", "district": "Jung-gu",
        "location": {"lat": LAMP[0], "lon": LAMP[1]}})
    assert answer.status_code == 201, answer.text
    light = Streetlight("jung-gu-lamp-1")
    await light.start()
    try:
        assert (await light.register(street.listener.port)).code.is_successful()
        yield answer.json(), light
    finally:
        await light.stop()


async def the_alarm(admin: httpx.AsyncClient, device_id: str, status: str = "open") -> dict | None:
    answer = await admin.get("/api/v1/alarms", params={"device": device_id, "type": "lamp_failure",
                                                        "status": status})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert len(items) <= 1, items
    return items[0] if items else None


async def work_orders_of(client: httpx.AsyncClient, device_id: str) -> list[dict]:
    answer = await client.get("/api/v1/workorders", params={"device": device_id})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


async def patch(client: httpx.AsyncClient, order: dict, expect: int = 200, **body) -> dict:
    answer = await client.patch(f"/api/v1/workorders/{order['id']}", json=body,
                                headers={"If-Match": str(order["version"])})
    assert answer.status_code == expect, answer.text
    return answer.json()


async def fault_to_work_order(db, street: Street, device: dict, light: Streetlight) -> tuple[dict, dict]:
    """The lamp fails, the alarm shows over REST, and the city's rule opens one work order."""
    await light.report(street.listener.port, lamp_failure=True)
    alarm = await eventually(lambda: the_alarm(street.admin, device["id"]), "the lamp failure alarm")
    assert CONTRACT <= set(alarm)
    assert (alarm["type"], alarm["severity"], alarm["status"], alarm["device_id"], alarm["count"]) == \
        ("lamp_failure", "major", "active", device["id"], 1)
    assert alarm["first_seen"] == alarm["last_seen"]
    # The scheduler leader's pass; a second pass (another node, the next round) opens no second one.
    assert await open_for_alarms(db) == 1
    assert await open_for_alarms(db) == 0
    (order,) = await work_orders_of(street.admin, device["id"])
    assert (order["alarm_id"], order["source"], order["status"], order["type"], order["priority"]) == \
        (alarm["id"], "alarm", "new", "repair_lamp", "high")
    return alarm, order


async def crew_tablet(street: Street, name: str) -> tuple[dict, httpx.AsyncClient]:
    crew = await street.admin.post("/api/v1/crews", json={"name": name})
    assert crew.status_code == 201, crew.text
    key = await street.admin.post("/api/v1/apikeys", json={"role": "crew", "crew_id": crew.json()["id"],
                                                           "name": f"{name} tablet"})
    assert key.status_code == 201, key.text
    tablet = httpx.AsyncClient(base_url=street.api, headers={"Authorization": f"Bearer {key.json()['key']}"})
    return crew.json(), tablet


async def device_status(admin: httpx.AsyncClient, device_id: str) -> str:
    answer = await admin.get(f"/api/v1/devices/{device_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["status"]


class Heard:
    """Every event of the city's stream, collected in the background."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def follow(self, client: httpx.AsyncClient, ready: asyncio.Event) -> None:
        async with client.stream("GET", "/api/v1/events", timeout=httpx.Timeout(None)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            sse = Sse(response)
            ready.set()
            async for line in sse.lines:
                if line.startswith("data:"):
                    self.messages.append(Message(data=line.removeprefix("data:").strip()))

    def kinds_of(self, subject_id: str) -> list[str]:
        return [m.json["kind"] for m in self.messages if m.json["subject_id"] == subject_id]

    def payloads_of(self, subject_id: str, kind: str) -> list[dict]:
        return [m.json["payload"] for m in self.messages
                if m.json["subject_id"] == subject_id and m.json["kind"] == kind]


async def test_a_lamp_failure_from_the_street_to_the_proven_repair(db, street, lamp):
    device, light = lamp
    crew, tablet = await crew_tablet(street, "Jung-gu maintenance crew")
    heard, ready = Heard(), asyncio.Event()
    listening = asyncio.create_task(heard.follow(street.admin, ready))
    await asyncio.wait_for(ready.wait(), WAIT_S)
    try:
        async with tablet:
            answer = await tablet.get("/api/v1/sync")
            assert answer.status_code == 200, answer.text
            token = answer.json()["next"]

            alarm, order = await fault_to_work_order(db, street, device, light)

            # Assigned under If-Match; a stale version is refused with the current one.
            order = await patch(street.admin, order, crew_id=crew["id"])
            assert (order["status"], order["version"], order["crew_id"]) == ("assigned", 2, crew["id"])
            stale = await street.admin.patch(f"/api/v1/workorders/{order['id']}", json={"notes": "late"},
                                             headers={"If-Match": "1"})
            assert stale.status_code == 412 and stale.json()["current_version"] == 2, stale.text

            # The tablet: its crew's work, and what is near it in whole metres.
            mine = (await tablet.get("/api/v1/workorders", params={"assigned_to": "me"})).json()["items"]
            assert [o["id"] for o in mine] == [order["id"]]
            near = await tablet.get("/api/v1/workorders", params={"near": "37.5670,126.9780"})
            assert near.status_code == 200, near.text
            (nearby,) = near.json()["items"]
            assert nearby["id"] == order["id"] and nearby["distance_m"] == 56

            # A citizen reports the dark lamp: it joins the same alarm and work order.
            reporter = await street.admin.post("/api/v1/apikeys", json={"role": "reporter", "name": "street app"})
            assert reporter.status_code == 201, reporter.text
            filed = await street.admin.post("/open311/v2/requests.json", data={
                "jurisdiction_id": "seoul", "api_key": reporter.json()["key"], "service_code": "streetlight_out",
                "lat": "37.56652", "long": "126.97802", "description": "The lamp by the bus stop is out"})
            assert filed.status_code == 201, filed.text
            request_id = filed.json()[0]["service_request_id"]
            joined = await the_alarm(street.admin, device["id"])
            assert (joined["id"], joined["count"]) == (alarm["id"], 2)
            (still_one,) = await work_orders_of(street.admin, device["id"])
            assert still_one["id"] == order["id"] and "bus stop" in still_one["notes"]
            order = still_one

            async def citizen_sees() -> dict:
                async with httpx.AsyncClient(base_url=street.api) as citizen:
                    answer = await citizen.get(f"/open311/v2/requests/{request_id}.json",
                                               params={"jurisdiction_id": "seoul"})
                assert answer.status_code == 200, answer.text
                return answer.json()[0]

            assert (await citizen_sees())["status"] == "open"

            # On the way, at work (the light goes into maintenance), done.
            order = await patch(tablet, order, status="en_route")
            order = await patch(tablet, order, status="in_progress")
            assert await device_status(street.admin, device["id"]) == "maintenance"
            order = await patch(tablet, order, status="done", resolution_code="lamp_replaced",
                                time_spent_minutes=25)
            assert order["status"] == "done"
            cleared = await the_alarm(street.admin, device["id"], status="cleared")
            assert (cleared["id"], cleared["clear_reason"]) == (alarm["id"], "work_order")
            assert await device_status(street.admin, device["id"]) == "online"
            assert (await citizen_sees())["status"] == "closed"

            # The light's next report, without the fault, proves the repair.
            await light.report(street.listener.port, lamp_failure=False)

            async def verified() -> dict | None:
                (now,) = await work_orders_of(street.admin, device["id"])
                return now if now["status"] == "verified" else None

            order = await eventually(verified, "the work order verified by the light's report")
            assert order["verified_at"] is not None

            # The tablet catches up from its token: the work order, its light and its alarm.
            changes = (await tablet.get("/api/v1/sync", params={"since": token})).json()
            assert [(o["id"], o["status"]) for o in changes["work_orders"]][-1] == (order["id"], "verified")
            assert device["id"] in {d["id"] for d in changes["devices"]}
            assert alarm["id"] in {a["id"] for a in changes["alarms"]}

            # The live stream heard the alarm raised and the work order move.
            await eventually(lambda: "alarm.raised" in heard.kinds_of(alarm["id"]), "alarm.raised on the stream")
            # Assigned, the citizen's words, en route, in progress, done, verified.
            await eventually(lambda: heard.kinds_of(order["id"]).count("work_order.updated") >= 6,
                             "every work_order.updated on the stream")
            # Into maintenance and back, told like every device status change (a dashboard keys on it).
            # (Its first registration, provisioned -> online, may land on the stream too on a
            # busy machine: it is committed in a batch of its own, whenever that runs.)
            def since_online() -> list[tuple]:
                return [(p["device_id"], p["status"], p["previous"])
                        for p in heard.payloads_of(device["id"], "device.status_changed")
                        if p["previous"] != "provisioned"]

            await eventually(lambda: len(since_online()) >= 2, "the light's status changes on the stream")
            assert since_online() == [(device["id"], "maintenance", "online"), (device["id"], "online", "maintenance")]
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


async def test_the_fault_again_within_the_window_reopens_the_work_order(db, street, lamp):
    device, light = lamp
    alarm, order = await fault_to_work_order(db, street, device, light)
    crew, tablet = await crew_tablet(street, "Jung-gu maintenance crew")
    async with tablet:
        order = await patch(street.admin, order, crew_id=crew["id"])
        order = await patch(tablet, order, status="in_progress")
        order = await patch(tablet, order, status="done", resolution_code="lamp_replaced")
    assert (await the_alarm(street.admin, device["id"], status="cleared"))["clear_reason"] == "work_order"

    # The lamp fails again the same evening.
    await light.report(street.listener.port, lamp_failure=True)

    async def reopened() -> dict | None:
        (now,) = await work_orders_of(street.admin, device["id"])
        return now if now["status"] == "reopened" else None

    order = await eventually(reopened, "the work order reopened by the light's report")
    again = await the_alarm(street.admin, device["id"])
    assert again["id"] != alarm["id"] and order["reopened_by_alarm_id"] == again["id"]
    assert order.get("verified_at") is None


@pytest.mark.parametrize("clear_after_minutes", [0, 10])
async def test_a_light_that_reports_its_repair_before_the_crew_closes_proves_it(db, street, lamp,
                                                                                clear_after_minutes):
    """The light reports the lamp fine as soon as it is fixed, minutes before the crew taps done
    (a device that reports only changes says nothing more): closing proves the repair at once,
    whether the alarm is still clearing (hysteresis) or already cleared by the condition."""
    device, light = lamp
    answer = await street.admin.put("/api/v1/alarms/settings", json={"clear_after_minutes": clear_after_minutes})
    assert answer.status_code == 200, answer.text
    alarm, order = await fault_to_work_order(db, street, device, light)
    order = await patch(street.admin, order, status="assigned", crew_id=(await crew_tablet(street, "North"))[0]["id"])
    order = await patch(street.admin, order, status="in_progress")
    await light.report(street.listener.port, lamp_failure=False)

    async def judged_gone() -> bool:
        async with db.system_tx() as conn:
            return await conn.fetchval("select clearing_since is not null or status = 'cleared' from alarms "
                                       "where id = $1", alarm["id"])

    await eventually(judged_gone, "the light's good report judged")
    order = await patch(street.admin, order, status="done", resolution_code="lamp_replaced")
    assert (order["status"], order["verified_at"] is not None) == ("verified", True)
    proven = await the_alarm(street.admin, device["id"], status="cleared")
    assert proven["id"] == alarm["id"] and proven["verified_at"] is not None


async def test_a_light_powered_off_for_the_work_comes_back_as_it_really_is(db, street, lamp):
    """The crew powers the controller off for the work (it de-registers): closing gives the light
    back as offline, not as the online it was before; registered again, online."""
    device, light = lamp
    alarm, order = await fault_to_work_order(db, street, device, light)
    order = await patch(street.admin, order, crew_id=(await crew_tablet(street, "North"))[0]["id"])
    order = await patch(street.admin, order, status="in_progress")
    assert (await light.deregister(street.listener.port)).code.is_successful()
    order = await patch(street.admin, order, status="cannot_fix", resolution_code="no_power")
    assert await device_status(street.admin, device["id"]) == "offline"
    order = await patch(street.admin, order, status="assigned")
    order = await patch(street.admin, order, status="in_progress")
    assert (await light.register(street.listener.port)).code.is_successful()
    await patch(street.admin, order, status="done")
    assert await device_status(street.admin, device["id"]) == "online"
