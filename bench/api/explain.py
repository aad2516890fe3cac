"""EXPLAIN (ANALYZE, BUFFERS) of each list query exactly as the app runs it.

The SQL comes from `DeviceRepository.list` itself, handed a connection that records the
statement instead of running it. It is then planned inside `Database.tenant_tx` (role
fleet_app, so row-level security applies) as a prepared statement executed five times first,
because asyncpg prepares and caches every statement and PostgreSQL may switch a prepared
statement to a generic plan from the sixth execution on: the sixth plan is the one the app
lives with. The first (custom) plan is kept too when it differs.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

from api.controllers.devices import filter_from_query
from fleet.db import Database
from fleet.registry.repository import DeviceRepository
from fleet.registry.service import decode_cursor

PARAMETERS = ("kind", "status", "district", "tag", "firmware", "bbox", "near", "radius_m", "group_id")


class _RecordingConnection:
    """Stands in for asyncpg.Connection: remembers the statement and returns no rows."""

    def __init__(self) -> None:
        self.sql: str | None = None
        self.args: tuple = ()

    async def fetch(self, sql: str, *args: Any) -> list:
        self.sql, self.args = sql, args
        return []

    async def fetchrow(self, sql: str, *args: Any) -> None:
        raise RuntimeError("group filters are not part of this benchmark")


async def list_statement(tenant_id: UUID, path: str) -> tuple[str, tuple]:
    """The SQL and arguments the app runs for `GET path` (a /api/v1/devices URL)."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
    device_filter = filter_from_query(*(query.get(name) for name in PARAMETERS))
    after = (decode_cursor(query["cursor"], near=device_filter.near is not None)
             if "cursor" in query else None)
    recorder = _RecordingConnection()
    await DeviceRepository(recorder).list(tenant_id, device_filter, after=after,  # type: ignore[arg-type]
                                          limit=int(query.get("limit", 100)))
    assert recorder.sql is not None
    return recorder.sql, recorder.args


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class Plan:
    path: str
    text: str
    execution_ms: float
    planning_ms: float
    generic: bool
    indexes: list[str]
    rows_removed_by_filter: int
    shared_hit: int
    shared_read: int
    first_text: str | None = None


@dataclass
class ScenarioPlans:
    scenario: str
    plans: list[Plan] = field(default_factory=list)

    @property
    def slowest(self) -> Plan:
        return max(self.plans, key=lambda p: p.execution_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(p.execution_ms for p in self.plans)


def _summarise(path: str, lines: list[str]) -> Plan:
    text = "\n".join(lines)
    execution = float(re.search(r"Execution Time: ([\d.]+) ms", text).group(1))
    planning_found = re.search(r"Planning Time: ([\d.]+) ms", text)
    buffers = re.search(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?", text)
    return Plan(
        path=path, text=text, execution_ms=execution,
        planning_ms=float(planning_found.group(1)) if planning_found else 0.0,
        # A generic plan shows $n where a custom plan shows the values.
        generic=bool(re.search(r"\$\d", text)),
        indexes=sorted(set(re.findall(r"(?:Index|Index Only|Bitmap Index) Scan (?:Backward )?(?:using|on) (\w+)", text))),
        rows_removed_by_filter=sum(int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", text)),
        shared_hit=int(buffers.group(1) or 0) if buffers else 0,
        shared_read=int(buffers.group(2) or 0) if buffers else 0)


async def explain_path(db: Database, tenant_id: UUID, path: str) -> Plan:
    sql, args = await list_statement(tenant_id, path)
    execute = f"execute bench_list({', '.join(_literal(a) for a in args)})"
    async with db.tenant_tx(tenant_id, readonly=True) as conn:
        await conn.execute(f"prepare bench_list as {sql}")
        try:
            first = [r[0] for r in await conn.fetch(f"explain (analyze, buffers) {execute}")]
            for _ in range(5):
                await conn.execute(execute)
            settled = [r[0] for r in await conn.fetch(f"explain (analyze, buffers) {execute}")]
        finally:
            await conn.execute("deallocate bench_list")
    plan = _summarise(path, settled)
    first_plan = _summarise(path, first)
    if _shape(first_plan.text) != _shape(plan.text):
        plan.first_text = first_plan.text
    return plan


def _shape(text: str) -> str:
    """The plan without its numbers, to tell whether two plans differ in kind."""
    return re.sub(r"\(actual.*?\)|\(cost.*?\)|\d+(\.\d+)?", "", text)


async def explain_all(db: Database, tenant_id: UUID, scenario_paths: dict[str, list[str]]) -> list[ScenarioPlans]:
    found = []
    for name, paths in scenario_paths.items():
        plans = ScenarioPlans(name)
        for path in paths:
            plans.plans.append(await explain_path(db, tenant_id, path))
        found.append(plans)
    return found
