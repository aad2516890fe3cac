"""Where one list request's time goes, step by step, in this process with no HTTP and no load.

Each step is what the server does for `GET /api/v1/devices?...`, timed on its own (median of
many runs, one at a time): the key lookup, the tenant transaction, the SQL alone, turning rows
into domain objects, into wire structs, and encoding JSON the way Litestar does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from litestar.serialization import encode_json

from api.controllers.devices import filter_from_query
from api.schemas import DevicePage, device_out
from bench.api.explain import PARAMETERS, list_statement
from fleet.access.service import ApiKeyService
from fleet.db import Database
from fleet.registry.repository import device_from_row
from fleet.registry.service import DeviceService


@dataclass
class Steps:
    scenario: str
    path: str
    rows: int
    body_bytes: int
    authenticate_us: float
    service_list_us: float
    sql_fetch_us: float
    tx_overhead_us: float
    rows_to_domain_us: float
    domain_to_wire_us: float
    encode_json_us: float

    @property
    def python_us(self) -> float:
        """The server-side Python cost of the page beyond the frameworks: rows → objects → JSON."""
        return self.rows_to_domain_us + self.domain_to_wire_us + self.encode_json_us


async def _median_us(step: Callable[[], Awaitable[object]], repeat: int) -> float:
    for _ in range(min(10, repeat)):
        await step()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await step()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6


def _median_sync_us(step: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6


async def measure(db: Database, key: str, scenario: str, path: str, repeat: int = 200) -> Steps:
    principal = await ApiKeyService(db).authenticate(key)
    query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
    device_filter = filter_from_query(*(query.get(name) for name in PARAMETERS))
    limit = int(query.get("limit", 100))
    service = DeviceService(db)
    keys = ApiKeyService(db)
    sql, args = await list_statement(principal.tenant_id, path)

    async def authenticate() -> None:
        await keys.authenticate(key)

    async def service_list() -> None:
        await service.list(principal, device_filter, cursor=query.get("cursor"), limit=limit)

    async with db.tenant_tx(principal.tenant_id, readonly=True) as conn:
        rows = await conn.fetch(sql, *args)

        async def fetch() -> None:
            await conn.fetch(sql, *args)

        fetch_us = await _median_us(fetch, repeat)

    async def empty_tx() -> None:
        async with db.tenant_tx(principal.tenant_id, readonly=True):
            pass

    rows = rows[:limit]
    has_distance = "distance_m" in (rows[0].keys() if rows else ())
    to_domain = lambda: [device_from_row(r, r["distance_m"] if has_distance else None) for r in rows]  # noqa: E731
    devices = to_domain()
    to_wire = lambda: DevicePage([device_out(d) for d in devices], "cursor")  # noqa: E731
    page = to_wire()
    return Steps(
        scenario=scenario, path=path, rows=len(rows), body_bytes=len(encode_json(page)),
        authenticate_us=await _median_us(authenticate, repeat),
        service_list_us=await _median_us(service_list, repeat),
        sql_fetch_us=fetch_us,
        tx_overhead_us=await _median_us(empty_tx, repeat),
        rows_to_domain_us=_median_sync_us(to_domain, repeat),
        domain_to_wire_us=_median_sync_us(to_wire, repeat),
        encode_json_us=_median_sync_us(lambda: encode_json(page), repeat))
