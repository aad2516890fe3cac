"""The lighting jobs on APScheduler 3 (AsyncIOScheduler), run by the leader only.

While this node leads, one reconcile runs (see `fleet.lighting.reconcile`):
- at once on becoming leader: the catch-up after a restart or a hand-over;
- every `interval_s` (a minute): the safety net for anything missed;
- at the exact next transition any light has (a date job, replaced after every run);
- within a second of a lighting change anywhere (NOTIFY fleet_lighting on the lock's connection).

Runs never overlap: a run asked for while one is going happens right after it, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from fleet.alarms.service import AlarmService
from fleet.campaigns.rollout import CampaignJobs
from fleet.db import Database
from fleet.lighting.reconcile import MIN_COMMAND_EXPIRY, ReconcileReport, Reconciler
from fleet.lighting.repository import NOTIFY_CHANNEL
from fleet.scheduling.forecast import FillProfileJobs
from fleet.scheduling.leader import LeaderElection, Leadership, NotLeader, together
from fleet.scheduling.alarms import AlarmJobs
from fleet.scheduling.collection import CollectionJobs
from fleet.scheduling.workorders import WorkOrderJobs
from fleet.scheduling.retention import RETENTION_DAYS, EventRetention, SessionRetention

log = structlog.get_logger(__name__)

RECONCILE_JOB = "lighting-reconcile"
TRANSITION_JOB = "lighting-next-transition"
CHANGE_JOB = "lighting-changed"
INTERVAL_S = 60.0
MISFIRE_GRACE_S = 30
# Where devices download firmware when the caller does not say (the CoAP listener's default).
DEFAULT_DOWNLOAD_BASE_URI = "coap://127.0.0.1:5683"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LightingJobs:
    def __init__(self, db: Database, *, clock: Callable[[], dt.datetime] = utc_now,
                 interval_s: float = INTERVAL_S, min_command_expiry: dt.timedelta = MIN_COMMAND_EXPIRY) -> None:
        self.reconciler = Reconciler(db, min_command_expiry=min_command_expiry)
        # Injected for tests; APScheduler itself runs on the real clock, see _schedule_transition.
        self.clock = clock
        self.interval_s = interval_s
        self.runs = 0
        self.last_reports: list[ReconcileReport] = []
        self._scheduler: AsyncIOScheduler | None = None
        self._leadership: Leadership | None = None
        self._again = False
        self._running: asyncio.Task | None = None

    @contextlib.asynccontextmanager
    async def lead(self, leadership: Leadership) -> AsyncIterator[None]:
        scheduler = AsyncIOScheduler(timezone=dt.UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_S})
        self._scheduler, self._leadership = scheduler, leadership
        scheduler.add_job(self.run, "interval", seconds=self.interval_s, id=RECONCILE_JOB,
                          next_run_time=utc_now())
        await leadership.connection.add_listener(NOTIFY_CHANNEL, self._changed)
        scheduler.start()
        try:
            yield
        finally:
            scheduler.shutdown(wait=False)
            self._scheduler = self._leadership = None
            running = self._running
            if running is not None and not running.done():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await running
            with contextlib.suppress(Exception):
                await leadership.connection.remove_listener(NOTIFY_CHANNEL, self._changed)

    def _changed(self, *_notification: object) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.add_job(self.run, id=CHANGE_JOB, replace_existing=True)

    async def run(self) -> None:
        """One reconcile of every city, or a note to run again when one is under way."""
        self._again = True
        if self._running is not None and not self._running.done():
            return
        self._running = asyncio.current_task()
        try:
            while self._again and self._leadership is not None:
                self._again = False
                await self._reconcile(self._leadership)
        except asyncio.CancelledError:
            # Leadership ended mid-run (see lead); the run's transaction rolls back, and telling
            # APScheduler the job "raised" would only log a false alarm.
            log.info("lighting reconcile abandoned: leadership ended")
        finally:
            self._running = None

    async def _reconcile(self, leadership: Leadership) -> None:
        now = self.clock()
        reports = []
        try:
            tenants = await self.reconciler.tenants()
        except Exception:  # noqa: BLE001 - the next tick retries
            log.exception("listing cities for the lighting reconcile failed")
            return
        for tenant in tenants:
            try:
                reports.append(await self.reconciler.reconcile_tenant(tenant, now, leadership.fence))
            except NotLeader as exc:
                log.info("scheduler run refused: no longer leader", reason=str(exc))
                return
            except Exception:  # noqa: BLE001 - one city's fault must not stop the others' lights
                log.exception("lighting reconcile failed", tenant=tenant.slug)
        self.runs += 1
        self.last_reports = reports
        upcoming = [r.next_transition_at for r in reports if r.next_transition_at is not None]
        if upcoming:
            self._schedule_transition(min(upcoming))

    def _schedule_transition(self, at: dt.datetime) -> None:
        if self._scheduler is None or not self._scheduler.running:
            return
        # `at` is on the injected clock; APScheduler waits on the real one.
        wall = at - (self.clock() - utc_now())
        self._scheduler.add_job(self.run, "date", run_date=wall, id=TRANSITION_JOB, replace_existing=True)
        log.debug("next lighting transition scheduled", at=at.isoformat())


async def run_scheduler(db: Database, *, node: str | None = None,
                        events_retention_days: int = RETENTION_DAYS,
                        alarm_service: AlarmService | None = None,
                        download_base_uri: str = DEFAULT_DOWNLOAD_BASE_URI,
                        secure_download_base_uri: str | None = None,
                        routing_url: str | None = None) -> None:
    """The `fleet serve` component: try to lead; while leading, keep the lights on schedule,
    open work orders from alarms, look for stuck fill sensors, roll firmware campaigns out,
    keep the bins' fill profiles current, complete collection stops by their bins' fill drop,
    build each city's evening plan, keep the event log within its retention and forget
    browser sessions long over."""
    alarm_service = alarm_service or AlarmService(db)
    # One line per job run is noise at INFO; its warnings (misfires) and errors still show.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    await LeaderElection(db, node).run(together(
        LightingJobs(db).lead, WorkOrderJobs(db).lead,
        AlarmJobs(db, alarm_service).lead,
        CampaignJobs(db, download_base_uri=download_base_uri, secure_download_base_uri=secure_download_base_uri,
                     alarm_service=alarm_service).lead,
        FillProfileJobs(db).lead, CollectionJobs(db, routing_url=routing_url).lead,
        EventRetention(db, retention_days=events_retention_days).lead, SessionRetention(db).lead))
