"""GET /api/v1/events over real HTTP: live, per city, resumable, filtered, fed by LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from fleet.access.models import Role
from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from fleet.db import Database
from fleet.events.models import ALARM_RAISED, COMMAND_FINISHED, DEVICE_STATUS_CHANGED, WORK_ORDER_UPDATED
from fleet.events.repository import EventRepository
from fleet.events.service import EventService, publish
from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import make_city, serve_api
from tests.protocols.conftest import listener  # noqa: F401 - the CoAP listener fixture
from tests.protocols.devices import MiniDevice

WAIT_S = 15.0


@dataclass
class Message:
    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> dict:
        return json.loads(self.data)


class Sse:
    """Reads an event stream message by message (blocks end at a blank line)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.start: str | None = None  # the position the stream began at, when it says

    async def next(self, *, skip_comments: bool = True) -> Message:
        while True:
            message = await asyncio.wait_for(self._one(), WAIT_S)
            if not (skip_comments and message.comments and message.id is None and message.data is None):
                return message

    async def _one(self) -> Message:
        message = Message()
        async for line in self.lines:
            if line == "":
                return message
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                message.comments.append(value)
            elif name == "data":
                message.data = value if message.data is None else f"{message.data}\n{value}"
            elif name == "retry":
                message.retry = int(value)
            else:
                setattr(message, name, value)
        raise EOFError("the stream ended")

    async def event(self) -> Message:
        """The next message that carries an event."""
        while True:
            message = await self.next()
            if message.data is not None:
                return message


@asynccontextmanager
async def stream(client: httpx.AsyncClient, params: dict | None = None, headers: dict | None = None):
    async with client.stream("GET", "/api/v1/events", params=params, headers=headers,
                             timeout=httpx.Timeout(WAIT_S)) as response:
        assert response.status_code == 200, (await response.aread())[:300]
        assert response.headers["content-type"].startswith("text/event-stream")
        sse = Sse(response)
        first = await sse.next()  # sent at once: the stream is open and positioned
        assert first.retry == 3000 and first.data is None
        sse.start = first.id
        yield sse


async def emit(db, city, kind: str, subject_id: str, **payload) -> None:
    async with db.system_tx() as conn:
        await publish(conn, city.tenant_id, kind, kind.partition(".")[0], subject_id, payload)


async def test_an_event_committed_anywhere_reaches_the_stream_and_no_other_city(db, seoul, busan):
    async with stream(seoul.client) as sse:
        await emit(db, busan, ALARM_RAISED, "busan-alarm", secret="busan")
        await emit(db, seoul, ALARM_RAISED, "a1", severity="major")
        message = await sse.event()
    assert message.event == ALARM_RAISED
    body = message.json
    assert body["subject_type"] == "alarm" and body["subject_id"] == "a1"
    assert body["kind"] == ALARM_RAISED and body["payload"] == {"severity": "major"} and body["at"]
    assert message.id and "-" in message.id


async def test_last_event_id_resumes_without_gaps_or_duplicates(db, seoul):
    for n in range(5):
        await emit(db, seoul, WORK_ORDER_UPDATED, f"w{n}", n=n)
    async with stream(seoul.client, headers={"Last-Event-ID": "0-0"}) as sse:
        seen = [await sse.event() for _ in range(5)]
    assert [m.json["payload"]["n"] for m in seen] == [0, 1, 2, 3, 4]
    await emit(db, seoul, WORK_ORDER_UPDATED, "w5", n=5)
    async with stream(seoul.client, headers={"Last-Event-ID": seen[2].id}) as sse:
        again = [await sse.event() for _ in range(3)]
    assert [m.json["payload"]["n"] for m in again] == [3, 4, 5]
    # For clients that cannot set headers; and the ids are the same for the same events.
    async with stream(seoul.client, params={"last_event_id": seen[3].id}) as sse:
        query = [await sse.event() for _ in range(2)]
    assert [m.id for m in query] == [again[1].id, again[2].id]


async def test_a_client_that_drops_before_any_event_resumes_from_where_it_started(db, seoul):
    async with stream(seoul.client) as sse:
        start = sse.start
    assert start is not None
    await emit(db, seoul, ALARM_RAISED, "while-away", n=1)
    async with stream(seoul.client, headers={"Last-Event-ID": start}) as sse:
        assert (await sse.event()).json["payload"] == {"n": 1}


async def test_a_burst_of_commits_arrives_complete_and_in_order(db, seoul):
    async with stream(seoul.client) as sse:
        async def commit_many() -> None:
            for n in range(300):
                await emit(db, seoul, DEVICE_STATUS_CHANGED, f"d{n}", n=n)

        writer = asyncio.create_task(commit_many())
        seen = [(await sse.event()).json["payload"]["n"] for _ in range(300)]
        await writer
    assert seen == list(range(300))


async def test_kinds_filter_by_kind_and_subject_and_moves_the_id_past_the_rest(db, seoul):
    async with stream(seoul.client, params={"kinds": "alarm,command.finished"}) as sse:
        await emit(db, seoul, DEVICE_STATUS_CHANGED, "d1")
        await emit(db, seoul, ALARM_RAISED, "a1")
        await emit(db, seoul, COMMAND_FINISHED, "c1")
        await emit(db, seoul, WORK_ORDER_UPDATED, "w1")
        first, second = await sse.event(), await sse.event()
        passed = await sse.next()
    assert [first.event, second.event] == [ALARM_RAISED, COMMAND_FINISHED]
    # The work order was read but not wanted: an id alone, after the command's.
    assert passed.data is None and passed.event is None and passed.id > second.id


async def test_refusals(db, seoul, api_url):
    reporter = await make_city(db, "reports", Role.REPORTER)
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {reporter.key}"}) as client:
        response = await client.get("/api/v1/events")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    for headers, params in [({"Last-Event-ID": "yesterday"}, None), (None, {"last_event_id": "1-2-3"}),
                            (None, {"kinds": "Alarm!"})]:
        response = await seoul.client.get("/api/v1/events", headers=headers, params=params)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
    response = await seoul.client.get("/api/v1/events", params={"kinds": "alarm..raised"})
    assert response.status_code == 422
    response = await seoul.client.get("/api/v1/events", headers={"Last-Event-ID": f"1-{2**63}"})
    assert response.status_code == 422


async def test_a_position_retention_passed_or_never_given_out_resets(db, seoul):
    for n in range(3):
        await emit(db, seoul, ALARM_RAISED, f"a{n}", n=n)
    async with stream(seoul.client, headers={"Last-Event-ID": "0-0"}) as sse:
        first = await sse.event()
    async with db.system_tx() as conn:
        await conn.execute("update events set at = at - interval '30 days' where subject_id in ('a0', 'a1')")
        assert await EventRepository(conn).prune_before(datetime.now(UTC) - timedelta(days=7)) == 2
    async with stream(seoul.client, headers={"Last-Event-ID": first.id}) as sse:
        reset = await sse.next()
        kept = await sse.event()
    assert reset.event == "reset" and reset.json == {"reason": "pruned"}
    assert kept.json["payload"] == {"n": 2}
    async with stream(seoul.client, headers={"Last-Event-ID": f"{2**62}-1"}) as sse:
        reset = await sse.next()
        assert reset.event == "reset" and reset.json == {"reason": "unknown"}
        await emit(db, seoul, ALARM_RAISED, "a3", n=3)
        assert (await sse.event()).json["payload"] == {"n": 3}


async def test_keep_alives_and_a_revoked_key_ends_its_stream(db):
    city = await make_city(db, "seoul")
    async with serve_api(db, event_service=EventService(db, keepalive_s=0.3)) as url:
        admin = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {city.key}"})
        issued = (await admin.post("/api/v1/apikeys", json={"role": "crew", "name": "tablet"})).json()
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {issued['key']}"}) as tablet:
            async with stream(tablet) as sse:
                alive = await sse.next(skip_comments=False)
                assert alive.comments == ["keep-alive"]
                assert (await admin.delete(f"/api/v1/apikeys/{issued['api_key']['id']}")).status_code in (200, 204)
                with pytest.raises(EOFError):
                    while True:
                        await sse.next()
        await admin.aclose()


async def test_a_browser_sessions_stream_outlives_keep_alives_and_ends_when_it_signs_out(db):
    city = await make_city(db, "seoul")
    async with serve_api(db, event_service=EventService(db, keepalive_s=0.3)) as url:
        async with httpx.AsyncClient(base_url=url) as browser:
            assert (await browser.post("/session", data={"key": city.key})).status_code == 303
            secret = browser.cookies["fleet_session"]
            async with stream(browser) as sse:
                for _ in range(3):  # the cookie, not a bearer header, keeps it authorized
                    assert (await sse.next(skip_comments=False)).comments == ["keep-alive"]
                await emit(db, city, ALARM_RAISED, "a1", n=1)
                assert (await sse.event()).json["payload"] == {"n": 1}
                async with httpx.AsyncClient(base_url=url, cookies={"fleet_session": secret}) as other_tab:
                    assert (await other_tab.post("/session/logout")).status_code == 303
                with pytest.raises(EOFError):
                    while True:
                        await sse.next()


async def test_events_keep_coming_while_the_listening_connection_is_lost(db):
    city = await make_city(db, "seoul")
    events = EventService(db, poll_s=0.2)
    async with serve_api(db, event_service=events) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {city.key}"}) as client:
            async with stream(client) as sse:
                for _ in range(200):
                    if events.follower.backend_pid:
                        break
                    await asyncio.sleep(0.05)
                async with db.system_tx() as conn:
                    await conn.execute("select pg_terminate_backend($1)", events.follower.backend_pid)
                await emit(db, city, ALARM_RAISED, "a1", n=1)
                assert (await sse.event()).json["payload"] == {"n": 1}


async def test_a_device_registering_over_udp_and_a_command_it_answers_are_events(db, seoul, listener):
    device = await DeviceService(db).create_validated(seoul.principal, NewDevice(
        kind=DeviceKind.STREETLIGHT, endpoint="light-1", lat=37.56, lon=126.97, district="Jung-gu"))
    light = MiniDevice("light-1")
    light.add("/3416/0/1", 100)
    await light.start()
    try:
        async with stream(seoul.client, params={"kinds": "device,command"}) as sse:
            assert (await light.register(listener.port)).code.is_successful()
            online = await sse.event()
            assert online.event == DEVICE_STATUS_CHANGED
            assert online.json["payload"] == {"device_id": str(device.id), "status": "online",
                                              "previous": "provisioned"}
            # An Update changes nothing: no event. The command's outcome is the next one.
            assert (await light.update(listener.port)).code.is_successful()
            batch = await CommandService(db).submit(seoul.principal, CommandRequest(
                Target(device_ids=(device.id,)), Operation.WRITE, "/3416/0/1", 30))
            finished = await sse.event()
            assert finished.event == COMMAND_FINISHED
            payload = finished.json["payload"]
            assert payload["batch_id"] == str(batch.id) and payload["status"] == "succeeded"
            assert payload["device_id"] == str(device.id) and payload["path"] == "/3416/0/1"
            # An operator takes it out for maintenance: the same kind of event.
            response = await seoul.client.patch(f"/api/v1/devices/{device.id}", json={"status": "maintenance"})
            assert response.status_code == 200, response.text
            maintenance = await sse.event()
            assert maintenance.json["payload"]["status"] == "maintenance"
            assert maintenance.json["payload"]["previous"] == "online"
    finally:
        await light.stop()


async def test_a_registration_that_runs_out_is_an_offline_event(db, seoul, listener):
    device = await DeviceService(db).create_validated(seoul.principal, NewDevice(
        kind=DeviceKind.STREETLIGHT, endpoint="light-2", lat=37.56, lon=126.97, district="Jung-gu"))
    light = MiniDevice("light-2")
    await light.start()
    try:
        async with stream(seoul.client, params={"kinds": "device.status_changed"}) as sse:
            assert (await light.register(listener.port, lifetime=1)).code.is_successful()
            assert (await sse.event()).json["payload"]["status"] == "online"
            offline = await sse.event()  # the sweep, once lifetime and grace ran out
            assert offline.json["payload"] == {"device_id": str(device.id), "status": "offline",
                                               "previous": "online"}
    finally:
        await light.stop()


async def test_a_change_made_through_one_node_streams_from_another(db, database_dsn):
    city = await make_city(db, "seoul")
    device = await DeviceService(db).create_validated(city.principal, NewDevice(
        kind=DeviceKind.STREETLIGHT, endpoint="light-3", lat=37.56, lon=126.97, district="Jung-gu"))
    other = await Database.connect(database_dsn, min_size=1, max_size=4)
    headers = {"Authorization": f"Bearer {city.key}"}
    try:
        async with serve_api(db) as node_a, serve_api(other) as node_b, \
                httpx.AsyncClient(base_url=node_a, headers=headers) as a, \
                httpx.AsyncClient(base_url=node_b, headers=headers) as b:
            async with stream(b) as sse:
                response = await a.patch(f"/api/v1/devices/{device.id}", json={"status": "maintenance"})
                assert response.status_code == 200
                changed = await sse.event()
            assert changed.json["payload"] == {"device_id": str(device.id), "status": "maintenance",
                                               "previous": "provisioned"}
    finally:
        await other.close()
