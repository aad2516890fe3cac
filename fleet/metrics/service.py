"""Gauges read at scrape time: the city-wide counts from the database (cached) and this process's pools."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fleet.db import Database
from fleet.metrics.repository import MetricsRepository

log = structlog.get_logger(__name__)

# How long a read of the city-wide counts serves scrapes: every node and every Prometheus
# replica scrapes, and each read is five grouped counts over all cities.
MAX_AGE_S = 15.0
# A scrape waits for the read; Prometheus gives up after 10 s by default. It may wait for a
# connection (the system pool is busy during a registration storm) as much as for the counts.
READ_TIMEOUT_S = 5.0

# name, help, labels, the repository's query (its rows carry the labels and `n`).
CITY_GAUGES = (
    ("fleet_registrations_online", "Devices registered now (registration not expired), by kind",
     ("tenant", "kind"), MetricsRepository.registrations_online),
    ("fleet_commands", "Commands not finished yet, by state (queued, sent)",
     ("tenant", "state"), MetricsRepository.commands_under_way),
    ("fleet_alarms", "Alarms not cleared, by severity and status (active, acknowledged)",
     ("tenant", "severity", "status"), MetricsRepository.alarms_not_cleared),
    ("fleet_workorders_open", "Work orders open, by status",
     ("tenant", "status"), MetricsRepository.work_orders_open),
    ("fleet_campaign_devices", "Devices of firmware campaigns under way, by campaign and device state",
     ("tenant", "campaign", "state"), MetricsRepository.campaign_devices),
)


class CityGauges(Collector):
    """The city-wide gauges, read through the system role across every city and labelled by
    the city's slug. They describe the database, not this process: every node reports the same
    values (aggregate with `max by (tenant, ...)`, never `sum`)."""

    def __init__(self, db: Database, *, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.max_age_s = max_age_s
        self.clock = clock
        self.reads = 0
        self._rows: list[list] | None = None
        self._read_at = -math.inf
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self.clock() - self._read_at < self.max_age_s

    async def refresh(self) -> None:
        """Read the counts again unless the last read (or failed try) is recent; call before a scrape.
        A scrape during a read waits for it (the first one after start would have no counts to
        report): at most READ_TIMEOUT_S, the read's own bound."""
        if self._fresh() and not self._lock.locked():
            return
        async with self._lock:
            if self._fresh():
                return
            self._read_at = self.clock()
            self.reads += 1
            try:
                async with asyncio.timeout(READ_TIMEOUT_S), self.db.system_tx() as conn:
                    repo = MetricsRepository(conn)
                    self._rows = [await query(repo) for *_, query in CITY_GAUGES]
            except Exception as exc:  # noqa: BLE001 - a scrape must answer; these gauges go missing meanwhile
                self._rows = None
                log.warning("reading the city-wide metrics failed", error=repr(exc))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = self._rows
        if rows is None:
            return
        for (name, help_text, labels, _), records in zip(CITY_GAUGES, rows, strict=True):
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for record in records:
                family.add_metric([str(record[label]) for label in labels], record["n"])
            yield family


# name -> help, of the gauges per pool (label `pool`).
POOL_GAUGES = {
    "fleet_db_pool_connections": "Connections open in the pool",
    "fleet_db_pool_connections_in_use": "Connections of the pool in use",
    "fleet_db_pool_max_connections": "Most connections the pool opens",
}


class PoolGauges(Collector):
    """This process's two database pools: `system` (devices, scheduler) and `api` (REST)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size, in_use, most = (GaugeMetricFamily(name, help_text, labels=["pool"])
                              for name, help_text in POOL_GAUGES.items())
        for name, pool in (("system", self.db.pool), ("api", self.db.tenant_pool)):
            size.add_metric([name], pool.get_size())
            in_use.add_metric([name], pool.get_size() - pool.get_idle_size())
            most.add_metric([name], pool.get_max_size())
        yield from (size, in_use, most)
