"""A campaign built with SQL, and a device side simulated by writing what devices would write."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from fleet.campaigns.rollout import CampaignJobs
from fleet.campaigns.repository import begin_running
from fleet.campaigns.rollout_steps import refused
from fleet.commands.models import Outcome
from fleet.commands.repository import CommandRepository
from tests.fleet.campaigns.firmware_helpers import add_image

BASE = "coap://fleet.test:5683"
SECURE_BASE = "coaps://fleet.test:5684"


class Clock:
    """The real clock, moved by an offset: the database's now() stays the real one."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def at(self, moment: dt.datetime) -> None:
        self.offset = moment - dt.datetime.now(dt.UTC)


class Rollout:
    def __init__(self, db, tenant_id: uuid.UUID, alarm_service=None) -> None:
        self.db, self.tenant_id = db, tenant_id
        self.clock = Clock()
        self.jobs = CampaignJobs(db, download_base_uri=BASE, secure_download_base_uri=SECURE_BASE,
                                 alarm_service=alarm_service, clock=self.clock)
        self.campaign_id: uuid.UUID | None = None

    async def campaign(self, waves: list[int], *, version: str = "2.0", old: str = "1.0",
                       status: str = "draft", start_at=None, **settings) -> list[uuid.UUID]:
        """A campaign over len(waves) new devices (device i in wave waves[i]), registered, on `old`."""
        image = await add_image(self.db, self.tenant_id, version, size=2048)
        async with self.db.system_tx() as conn:
            self.campaign_id = await conn.fetchval(
                """insert into firmware_campaigns (tenant_id, image_id, status, target, settings, device_count,
                                                   wave_count, start_at)
                   values ($1, $2, $3, '{}', $4, $5, $6, $7) returning id""",
                self.tenant_id, image, status, json.loads(json.dumps(settings)), len(waves),
                max(waves) + 1, start_at)
            self.image_id = image
            devices = []
            for n, wave in enumerate(waves):
                device = await conn.fetchval(
                    """insert into devices (tenant_id, kind, endpoint, lat, lon, firmware_version, model)
                       values ($1, 'streetlight', $2, 37.5, 127.0, $3, 'SL-1') returning id""",
                    self.tenant_id, f"fw-{uuid.uuid4().hex[:8]}-{n}", old)
                await conn.execute(
                    """insert into registrations (id, device_id, tenant_id, endpoint, address, port, lifetime_s,
                                                  binding, lwm2m_version, object_links, node, expires_at)
                       values ($1, $2, $3, $1, '127.0.0.1', 5683, 300, 'U', '1.1', '</5/0>', 'n',
                               now() + interval '1 hour')""", f"r-{device}", device, self.tenant_id)
                await conn.execute(
                    """insert into firmware_campaign_devices (tenant_id, campaign_id, device_id, wave)
                       values ($1, $2, $3, $4)""", self.tenant_id, self.campaign_id, device, wave)
                devices.append(device)
        return devices

    async def start(self) -> None:
        async with self.db.system_tx() as conn:
            await begin_running(conn, self.tenant_id, self.campaign_id)

    async def tick(self, times: int = 1) -> None:
        for _ in range(times):
            await self.jobs.tick()

    # -- what Fleet shows ------------------------------------------------------------------------

    async def device(self, device_id: uuid.UUID):
        async with self.db.system_tx() as conn:
            return await conn.fetchrow(
                """select d.*, c.operation, c.path, c.value, c.status as command_status
                   from firmware_campaign_devices d left join commands c on c.id = d.command_id
                   where d.campaign_id = $1 and d.device_id = $2""", self.campaign_id, device_id)

    async def state(self, device_id: uuid.UUID) -> str:
        return (await self.device(device_id))["state"]

    async def states(self, devices) -> list[str]:
        return [await self.state(d) for d in devices]

    async def campaign_row(self):
        async with self.db.system_tx() as conn:
            return await conn.fetchrow("select * from firmware_campaigns where id = $1", self.campaign_id)

    async def commands(self, device_id: uuid.UUID, path: str | None = None) -> list:
        async with self.db.system_tx() as conn:
            return await conn.fetch(
                """select c.*, b.origin from commands c join command_batches b on b.id = c.batch_id
                   where c.device_id = $1 and ($2::text is null or c.path = $2) order by c.created_at""",
                device_id, path)

    # -- what the device side writes -------------------------------------------------------------

    async def report(self, device_id: uuid.UUID, path: str, value) -> None:
        number = value if isinstance(value, (int, float)) else None
        text = value if isinstance(value, str) else None
        async with self.db.system_tx() as conn:
            await conn.execute(
                """insert into device_state (device_id, path, tenant_id, time, v_num, v_text)
                   values ($1, $2, $3, now(), $4, $5)
                   on conflict (device_id, path) do update
                       set time = now(), v_num = $4, v_text = $5, updated_at = now()""",
                device_id, path, self.tenant_id, number, text)

    async def taken(self, device_id: uuid.UUID) -> None:
        """A dispatcher claimed the device's step under way and sent it (no answer yet)."""
        command_id = (await self.device(device_id))["command_id"]
        async with self.db.system_tx() as conn:
            await conn.execute("update commands set status = 'sent', attempts = attempts + 1, sent_at = now() "
                               "where id = $1 and status = 'queued'", command_id)

    async def answer(self, device_id: uuid.UUID, succeeded: bool = True, error: str | None = None) -> None:
        """The device's answer to its step under way, recorded as the dispatcher would."""
        command_id = (await self.device(device_id))["command_id"]
        async with self.db.system_tx() as conn:
            await conn.execute("update commands set status = 'sent', attempts = attempts + 1, sent_at = now() "
                               "where id = $1", command_id)
            await CommandRepository(conn).complete(
                [Outcome(command_id, succeeded, None if not succeeded else {}, error,
                         retryable=not refused(error))],
                max_attempts=5, backoff_base_s=1)

    async def register_again(self, device_id: uuid.UUID, version: str, result: int | None = 1) -> None:
        """The device boots and registers on `version`; Fleet then hears its Update Result (1:
        it believes the update succeeded; None: not yet heard)."""
        async with self.db.system_tx() as conn:
            await conn.execute(
                """update registrations set registered_at = now(), updated_at = now(),
                          expires_at = now() + interval '1 hour' where device_id = $1""", device_id)
            await conn.execute("update devices set firmware_version = $2, updated_at = now() where id = $1",
                               device_id, version)
        await self.report(device_id, "/3/0/3", version)
        if result is not None:
            await self.report(device_id, "/5/0/5", result)

    async def downloaded(self, device_id: uuid.UUID, method: int = 0) -> None:
        """From downloading (just started) to /5/0/3 = 2: object 5 observed, package delivered."""
        await self.report(device_id, "/5/0/9", method)
        await self.answer(device_id)
        await self.tick()
        await self.answer(device_id)
        await self.report(device_id, "/5/0/3", 2)
