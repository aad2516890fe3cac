"""SQL of the alarm rules: the devices' context and latest values, and bins whose fill is stuck."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from fleet.alarms.rules.models import DeviceContext, Target, Value
from fleet.telemetry.models import stored_value


class RulesRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def contexts(self, device_ids: Sequence[UUID]) -> list[DeviceContext]:
        """Kind, place, nominal wattage and lighting target of devices still in service."""
        rows = await self.conn.fetch(
            """select d.id, d.tenant_id, d.kind, d.lat, d.lon, t.timezone,
                      d.attributes ->> 'nominal_wattage' as nominal_wattage,
                      lt.dimming_level, lt.since
               from devices d
               join tenants t on t.id = d.tenant_id
               left join lighting_targets lt on lt.tenant_id = d.tenant_id and lt.device_id = d.id
               where d.id = any($1::uuid[]) and d.status <> 'decommissioned'""",
            device_ids)
        return [DeviceContext(
            tenant_id=row["tenant_id"], device_id=row["id"], kind=row["kind"], lat=row["lat"],
            lon=row["lon"], timezone=row["timezone"], nominal_w=_number(row["nominal_wattage"]),
            target=Target(row["dimming_level"], row["since"]) if row["dimming_level"] is not None else None)
            for row in rows]

    async def targets(self, device_ids: Sequence[UUID]) -> dict[UUID, Target]:
        """The lighting target of each of these lights that has one (read on every batch: a
        push changes thousands at once, and judging against the one before raises false alarms)."""
        rows = await self.conn.fetch(
            "select device_id, dimming_level, since from lighting_targets where device_id = any($1::uuid[])",
            device_ids)
        return {row["device_id"]: Target(row["dimming_level"], row["since"]) for row in rows}

    async def latest(self, device_ids: Sequence[UUID], paths: Sequence[str]) -> dict[UUID, dict[str, Value]]:
        rows = await self.conn.fetch(
            """select device_id, path, time, v_num, v_text, v_bool from device_state
               where device_id = any($1::uuid[]) and path = any($2::text[])""",
            device_ids, list(paths))
        found: dict[UUID, dict[str, Value]] = {}
        for row in rows:
            found.setdefault(row["device_id"], {})[row["path"]] = Value(
                row["time"], stored_value(row["v_num"], row["v_text"], row["v_bool"]))
        return found

    async def bins_by_tenant(self) -> dict[UUID, list[UUID]]:
        rows = await self.conn.fetch(
            """select tenant_id, array_agg(id) as ids from devices
               where kind = 'waste_bin' and status <> 'decommissioned' group by tenant_id""")
        return {row["tenant_id"]: row["ids"] for row in rows}

    async def stuck_fill(self, tenant_id: UUID, bin_ids: Sequence[UUID], since: datetime,
                         until: datetime, neighbour_m: float, min_change: float) -> list[asyncpg.Record]:
        """Bins whose fill percentage did not move over [since, until] though it was reported
        at least twice, with how many bins within neighbour_m of each did move.

        Set-based over one window of telemetry; bins without neighbours that reported are
        left out (no one to compare with)."""
        return await self.conn.fetch(
            """with spread as (
                   select tm.tenant_id, tm.device_id, count(*) as reports,
                          max(tm.v_num) - min(tm.v_num) as moved, max(tm.v_num) as fill
                   from telemetry tm
                   where tm.path = '/3435/0/2' and tm.time >= $1 and tm.time <= $2
                     and tm.tenant_id = $5
                   group by tm.tenant_id, tm.device_id
               ), placed as (
                   select s.*, d.lat, d.lon from spread s
                   join devices d on d.tenant_id = s.tenant_id and d.id = s.device_id
                   where d.kind = 'waste_bin' and d.status <> 'decommissioned'
               ), scale as (
                   -- The narrowest degree of longitude among them: cells at least neighbour_m wide everywhere.
                   select greatest(min(cos(radians(lat))), 0.01) as cos_lat from placed
               ), cells as (
                   -- A grid of neighbour_m cells: a neighbour is in one of the 3 x 3 cells around a
                   -- bin, so the pairs are joined by equal cells (hashed), not every bin against every
                   -- other (16,000 bins: 24 s against 1 s).
                   select p.*, floor(p.lat * 111320.0 / $3)::bigint as cell_y,
                          floor(p.lon * 111320.0 * scale.cos_lat / $3)::bigint as cell_x
                   from placed p, scale
               )
               select b.tenant_id, b.device_id, b.reports, b.moved, b.fill,
                      count(n.device_id) as neighbours,
                      count(n.device_id) filter (where n.moved >= $4) as neighbours_moving
               from cells b
               cross join generate_series(-1, 1) as dy cross join generate_series(-1, 1) as dx
               join cells n on n.cell_y = b.cell_y + dy and n.cell_x = b.cell_x + dx
                   and n.tenant_id = b.tenant_id and n.device_id <> b.device_id
                   and abs(n.lat - b.lat) < $3 / 111320.0
                   and abs(n.lon - b.lon) < $3 / (111320.0 * greatest(cos(radians(b.lat)), 0.01))
               where b.reports >= 2 and b.device_id = any($6::uuid[])
               group by b.tenant_id, b.device_id, b.reports, b.moved, b.fill""",
            since, until, neighbour_m, min_change, tenant_id, bin_ids)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
