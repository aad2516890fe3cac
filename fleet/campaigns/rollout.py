"""The rollout engine: the leader's job that takes running campaigns from wave to wave and each
of their devices from `waiting` to `succeeded` or `failed` with a named reason.

Every pass reads what it needs afresh from PostgreSQL, so a restarted or new leader simply
carries on. Each campaign's pass is one transaction, fenced by the leader's epoch and holding
the campaign's row, so two passes never interleave on one campaign and a deposed leader's pass
cannot commit. A device's step (a command) is created in the transaction that moves its state,
and only for the devices that statement moved: no device is told to install twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import msgspec
import structlog

from fleet.alarms.models import AlarmType, Finding
from fleet.campaigns import rollout_steps as steps
from fleet.campaigns.models import DOWNLOAD_STATES, CampaignSettings, CampaignStatus, Delivery, DeviceState
from fleet.campaigns.progress import campaign_from_rows
from fleet.campaigns.repository import CampaignRepository, begin_running
from fleet.errors import ValidationFailed
from fleet.firmware.service import verify_stored
from fleet.campaigns.rollout_repository import RolloutRepository
from fleet.campaigns.rollout_progress import SUBJECT, advance_campaign, audit
from fleet.campaigns.rollout_steps import Advance, DeviceFacts, Fail, NextStep, Poll, Reading, decide
from fleet.campaigns.windows import applicable, campaign_hours, open_for
from fleet.commands.models import Operation
from fleet.db import Database
from fleet.events.models import CAMPAIGN_DEVICE_UPDATED, CAMPAIGN_UPDATED
from fleet.events.repository import EventRepository
from fleet.events.service import EVENTS_CHANNEL
from fleet.firmware.delivery import new_token, package_uri
from fleet.scheduling.leader import Leadership, NotLeader
from fleet.supervision import running

log = structlog.get_logger(__name__)

INTERVAL_S = 1.0
# Passes are at least this far apart: a busy city's events (alarms, every command finished) would
# otherwise run them back to back, each reading every live campaign's devices.
MIN_GAP_S = 0.2
# Campaign changes, command outcomes and alarms all publish events: a pass soon after one.
WAKE_CHANNEL = EVENTS_CHANNEL
ALARM_BATCH = 500
# How long a read of object 5 (to learn the delivery method), or an Update, may wait for a
# sleeping device to wake. A device that is not asleep and does not take its Update in time
# fails `never_came_back`, and its Update is called off.
READ_EXPIRY = timedelta(hours=24)
# A device that ended while away is told to stop notifying when it is next reachable, if soon.
STOP_OBSERVING_EXPIRY = timedelta(hours=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _whole_minutes(span: timedelta) -> timedelta:
    """Rounded down (at least one): the devices of a pass share a few expiries, not one each."""
    return max(timedelta(minutes=span // timedelta(minutes=1)), timedelta(minutes=1))


class CampaignJobs:
    def __init__(self, db: Database, *, download_base_uri: str, secure_download_base_uri: str | None = None,
                 alarm_service=None, clock: Callable[[], datetime] = utc_now, interval_s: float = INTERVAL_S) -> None:
        self.db = db
        self.download_base_uri = download_base_uri
        # coaps:// for devices registered over DTLS (None: they get download_base_uri too).
        self.secure_download_base_uri = secure_download_base_uri
        self.alarm_service = alarm_service
        self.clock = clock
        self.interval_s = interval_s
        self._wake = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lead(self, leadership: Leadership) -> AsyncIterator[None]:
        await leadership.connection.add_listener(WAKE_CHANNEL, self._woken)
        try:
            async with running(self._repeat(leadership), "firmware-rollout"):
                yield
        finally:
            with contextlib.suppress(Exception):
                await leadership.connection.remove_listener(WAKE_CHANNEL, self._woken)

    def _woken(self, *_notification: object) -> None:
        self._wake.set()

    async def _repeat(self, leadership: Leadership) -> None:
        while True:
            self._wake.clear()
            try:
                await self.tick(leadership)
            except NotLeader as exc:
                log.info("firmware rollout refused: no longer leader", reason=str(exc))
                return
            except Exception:  # noqa: BLE001 - the database may be away, or it is our bug: retry
                log.exception("firmware rollout pass failed; the next one retries")
            await asyncio.sleep(min(MIN_GAP_S, self.interval_s))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(self.interval_s - MIN_GAP_S, 0)):
                    await self._wake.wait()

    async def tick(self, leadership: Leadership | None = None) -> None:
        """One pass over every city's campaigns (tests call it directly, without leadership)."""
        now = self.clock()
        async with self.db.system_tx() as conn:
            due = await RolloutRepository(conn).due_scheduled(now)
        for row in due:
            async with self.db.system_tx() as conn:
                await _fence(conn, leadership)
                try:
                    # Checked again at the start itself: the bytes may have changed since.
                    await verify_stored(conn, row["tenant_id"], row["image_id"])
                except ValidationFailed as exc:
                    reason = "the image failed verification at its scheduled start: " + "; ".join(
                        e.message for e in exc.errors)
                    await RolloutRepository(conn).back_to_draft(row["tenant_id"], row["id"], reason)
                    await publish_campaign(conn, row["tenant_id"], row["id"], now)
                    await audit(conn, row["tenant_id"], "campaign.start_refused", row["id"],
                                {"status": "scheduled"}, {"status": "draft", "reason": reason})
                    log.warning("scheduled campaign not started", campaign=str(row["id"]), reason=reason)
                    continue
                if await begin_running(conn, row["tenant_id"], row["id"]):
                    await publish_campaign(conn, row["tenant_id"], row["id"], now)
                    await audit(conn, row["tenant_id"], "campaign.start", row["id"], {"status": "scheduled"},
                                {"status": "running", "reason": "its start time came"})
        async with self.db.system_tx() as conn:
            live = await RolloutRepository(conn).live()
        for row in live:
            try:
                async with self.db.system_tx() as conn:
                    await _fence(conn, leadership)
                    await CampaignPass(conn, self, row["tenant_id"], row["id"], now).run()
            except NotLeader:
                raise
            except Exception:  # noqa: BLE001 - one campaign's fault must not stop the others
                log.exception("firmware campaign pass failed", campaign=str(row["id"]))
        await self._hand_over_alarms(leadership)

    async def _hand_over_alarms(self, leadership: Leadership | None) -> None:
        """Failed devices raise firmware_update_failed, succeeded ones clear it, through the
        alarm service (work orders and events follow); marked done only once it committed."""
        if self.alarm_service is None:
            return
        async with self.db.system_tx() as conn:
            due = await RolloutRepository(conn).alarms_due(ALARM_BATCH)
        if not due:
            return
        at = self.clock()
        await self.alarm_service.apply([Finding(
            r["tenant_id"], r["device_id"], AlarmType.FIRMWARE_UPDATE_FAILED, r["alarm_todo"] == "raise", at,
            value=r["reason"], detail=" - ".join(p for p in (r["reason"], r["detail"]) if p))
            for r in due])
        async with self.db.system_tx() as conn:
            await _fence(conn, leadership)
            await RolloutRepository(conn).alarms_handed_over(due)


async def _fence(conn: asyncpg.Connection, leadership: Leadership | None) -> None:
    if leadership is not None:
        await leadership.fence(conn)


async def publish_campaign(conn: asyncpg.Connection, tenant_id: UUID, campaign_id: UUID, now: datetime) -> None:
    """campaign.updated with the campaign as the API shows it (as people's changes publish it)."""
    repo = CampaignRepository(conn)
    row = await repo.campaign(tenant_id, campaign_id)
    campaign = campaign_from_rows(row, await repo.counts(tenant_id, [campaign_id]), now)
    await EventRepository(conn).append(tenant_id, CAMPAIGN_UPDATED, SUBJECT, campaign_id,
                                       msgspec.to_builtins(campaign))


class CampaignPass:
    """One campaign's pass, in the caller's (fenced) transaction."""

    def __init__(self, conn: asyncpg.Connection, jobs: CampaignJobs, tenant_id: UUID, campaign_id: UUID,
                 now: datetime) -> None:
        self.conn, self.jobs, self.now = conn, jobs, now
        self.tenant_id, self.campaign_id = tenant_id, campaign_id
        self.repo = RolloutRepository(conn)
        self.changed = False
        self.ended: list[asyncpg.Record] = []

    async def run(self) -> None:
        campaign = await self.repo.lock(self.tenant_id, self.campaign_id)
        if campaign is None:
            return
        self.campaign = campaign
        self.settings = msgspec.convert(campaign["settings"], CampaignSettings)
        status = CampaignStatus(campaign["status"])
        await self._follow_devices()
        if status is CampaignStatus.RUNNING:
            await self._start_installs()
            await self._start_downloads()
        status = await advance_campaign(self, status)
        await self._stop_observing()
        if self.ended:
            await EventRepository(self.conn).append_many(
                (self.tenant_id, CAMPAIGN_DEVICE_UPDATED, SUBJECT, self.campaign_id, {
                    "campaign_id": str(self.campaign_id), "device_id": str(r["device_id"]), "state": r["state"],
                    "reason": r["reason"], "detail": r["detail"], "wave": r["wave"]}) for r in self.ended)
        if self.changed:
            await publish_campaign(self.conn, self.tenant_id, self.campaign_id, self.now)

    # -- devices under way --------------------------------------------------------------------

    async def _follow_devices(self) -> None:
        rows = await self.repo.facts(self.tenant_id, self.campaign_id)
        if not rows:
            return
        readings: dict[UUID, dict[str, Reading]] = {}
        for r in await self.repo.readings([r["device_id"] for r in rows]):
            readings.setdefault(r["device_id"], {})[r["path"]] = Reading(r["value"], r["updated_at"])
        fails, advances, nexts, polls = [], {}, [], []
        for row in rows:
            facts = DeviceFacts(**{k: row[k] for k in row.keys()} | {  # noqa: SIM118 - a Record
                "state": DeviceState(row["state"]), "readings": readings.get(row["device_id"], {})})
            decision = decide(facts, target_version=self.campaign["target_version"],
                              timeouts=self.settings.timeouts, health_period_s=self.settings.health_period_s,
                              now=self.now)
            if isinstance(decision, Fail):
                fails.append((facts, decision))
            elif isinstance(decision, Advance):
                advances.setdefault((facts.state, decision.state), []).append(facts.device_id)
            elif isinstance(decision, NextStep):
                nexts.append((facts, decision))
            elif isinstance(decision, Poll):
                polls.append(facts.device_id)
        if fails:
            self.ended += await self.repo.fail(
                self.tenant_id, self.campaign_id, [f.device_id for f, _ in fails], [f.state for f, _ in fails],
                [d.reason.value for _, d in fails], [d.detail for _, d in fails])
            self.changed = True
        for (from_state, to_state), ids in advances.items():
            moved = await self.repo.advance(self.tenant_id, self.campaign_id, ids, from_state, to_state)
            self.changed = self.changed or bool(moved)
            if to_state is DeviceState.SUCCEEDED:
                self.ended += moved
        await self._next_steps(nexts)
        await self._poll(polls)

    async def _stop_observing(self) -> None:
        """A device that ended needs /5/0 followed no longer: cancel the observation its download
        began (which each Register since renewed). Left alone, every device a campaign ever
        reached would keep one in the listener's memory and in `observations` for good, and be
        observed again at each Register. Without an observation the dispatcher only deletes its row."""
        ended = [r["device_id"] for r in self.ended]
        await self.repo.insert_steps(self.tenant_id, self.campaign_id, Operation.CANCEL_OBSERVE, "/5/0", ended,
                                     [None] * len(ended), STOP_OBSERVING_EXPIRY, remember=False)

    async def _next_steps(self, nexts: list[tuple[DeviceFacts, NextStep]]) -> None:
        if not nexts:
            return
        tokens = {f.device_id: new_token() if d.delivery is Delivery.PULL else None for f, d in nexts}
        moved = set(await self.repo.next_steps(
            self.tenant_id, self.campaign_id, [f.device_id for f, _ in nexts], [f.step for f, _ in nexts],
            [d.step for _, d in nexts], [d.observing for _, d in nexts],
            [d.delivery.value if d.delivery else None for _, d in nexts],
            [t[1] if t else None for t in tokens.values()], self.settings.timeouts.token_s))
        reads = [f.device_id for f, d in nexts if f.device_id in moved and d.step == steps.READ]
        await self.repo.insert_steps(self.tenant_id, self.campaign_id, Operation.READ, "/5/0", reads,
                                     [None] * len(reads), READ_EXPIRY)
        download = timedelta(seconds=self.settings.timeouts.download_s)
        pulls = [f.device_id for f, d in nexts
                 if f.device_id in moved and d.step == steps.DELIVER and d.delivery is Delivery.PULL]
        secure_base = self.jobs.secure_download_base_uri
        secure = await self.repo.registered_secure(self.tenant_id, pulls) if secure_base and pulls else set()
        await self.repo.insert_steps(
            self.tenant_id, self.campaign_id, Operation.WRITE, "/5/0/1", pulls,
            [package_uri(secure_base if d in secure else self.jobs.download_base_uri, tokens[d][0])
             for d in pulls], download)
        pushes = [f.device_id for f, d in nexts
                  if f.device_id in moved and d.step == steps.DELIVER and d.delivery is Delivery.PUSH]
        image = {"image_id": str(self.campaign["image_id"])}
        await self.repo.insert_steps(self.tenant_id, self.campaign_id, Operation.PUSH_FIRMWARE, "/5/0/0",
                                     pushes, [image] * len(pushes), download)

    async def _poll(self, device_ids: list[UUID]) -> None:
        due = await self.repo.due_polls(self.tenant_id, self.campaign_id, device_ids, steps.POLL_S)
        for path in ("/5/0/3", "/5/0/5"):
            # Short-lived: a read not delivered by the next poll is superseded by that one.
            await self.repo.insert_steps(self.tenant_id, self.campaign_id, Operation.READ, path, due,
                                         [None] * len(due), timedelta(seconds=steps.POLL_S), remember=False)

    # -- new steps: only while running ----------------------------------------------------------

    async def _open_now(self, device_ids: list[UUID]) -> dict[UUID, timedelta | None]:
        """The devices whose maintenance window is open now, with how long it stays open (None:
        no window restricts them)."""
        if not device_ids:
            return {}
        own = campaign_hours(self.settings.window)
        city = [] if own else await self.repo.city_windows(self.tenant_id)
        groups = {} if own else await self.repo.group_windows(self.tenant_id, device_ids)
        zone = self.campaign["timezone"]
        found = {d: open_for(applicable(own, groups.get(d, []), city), self.now, zone) for d in device_ids}
        return {d: left for d, left in found.items() if left is not False}

    async def _start_installs(self) -> None:
        ready = await self.repo.in_state(self.tenant_id, self.campaign_id, DeviceState.DOWNLOADED, 100_000)
        open_now = await self._open_now(ready)
        moved = await self.repo.start_installs(self.tenant_id, self.campaign_id, list(open_now))
        # An Update waits for a sleeping device to wake (a day, or install_s if longer), but never
        # past its window's close: one not fetched by then expires, and the device waits,
        # downloaded, for the next window; it is never installed outside one.
        wait = max(READ_EXPIRY, timedelta(seconds=self.settings.timeouts.install_s))
        by_expiry: dict[timedelta, list[UUID]] = {}
        for device_id in moved:
            left = open_now[device_id]
            expiry = wait if left is None else min(wait, _whole_minutes(left))
            by_expiry.setdefault(expiry, []).append(device_id)
        for expiry, device_ids in by_expiry.items():
            await self.repo.insert_steps(self.tenant_id, self.campaign_id, Operation.EXECUTE, "/5/0/2",
                                         device_ids, [None] * len(device_ids), expiry)
        self.changed = self.changed or bool(moved)

    async def _start_downloads(self) -> None:
        counts = await self.counts()
        slots = self.settings.concurrency - sum(counts[s] for s in DOWNLOAD_STATES)
        if slots <= 0 or not counts.get(DeviceState.WAITING):
            return
        if self.settings.restrict_downloads:
            # Every waiting device is looked at: those first in line may be the ones whose window
            # stays closed for hours, and must not hold back the rest.
            waiting = await self.repo.in_state(self.tenant_id, self.campaign_id, DeviceState.WAITING,
                                               counts[DeviceState.WAITING])
            chosen = list(await self._open_now(waiting))[:slots]
        else:
            chosen = await self.repo.in_state(self.tenant_id, self.campaign_id, DeviceState.WAITING, slots)
        moved, already = await self.repo.start_downloads(self.tenant_id, self.campaign_id, chosen,
                                                         self.campaign["target_version"])
        if already:
            log.info("firmware campaign devices already on the target version: verified, not updated again",
                     campaign=str(self.campaign_id), devices=len(already))
        await self.repo.insert_steps(self.tenant_id, self.campaign_id, Operation.OBSERVE, "/5/0", moved,
                                     [None] * len(moved), timedelta(seconds=self.settings.timeouts.download_s))
        self.changed = self.changed or bool(moved) or bool(already)

    # -- the campaign ---------------------------------------------------------------------------

    async def counts(self, wave: int | None = None) -> Counter:
        found: Counter = Counter()
        for r in await self.repo.counts(self.tenant_id, self.campaign_id):
            if wave is None or r["wave"] == wave:
                found[DeviceState(r["state"])] += r["n"]
        return found
