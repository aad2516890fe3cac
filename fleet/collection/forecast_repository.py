"""The SQL of fill forecasting: bins' fill readings, profiles (bin_fill_profiles) and emptyings
(bin_emptyings), always on the city's side of the wall the caller's transaction holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from fleet.collection.forecast import SLOTS, Emptying, Profile, Reading
from fleet.collection.models import DEFAULT_THRESHOLD_PERCENT

FILL_PATH = "/3435/0/2"
EMPTIED_PATH = "/3435/0/9"
# The origin of the Executes a crew's done stop sends (fleet.collection.driving).
STOP_ORIGIN = "collection"


def profile_from(row: asyncpg.Record) -> Profile | None:
    """The profile in a row holding bin_fill_profiles' columns (None: the bin has none yet)."""
    if row["rates"] is None or len(row["rates"]) != SLOTS:
        return None
    return Profile(tuple(row["rates"]), tuple(row["weights"]), row["residual_sd"], row["last_fill"],
                   row["last_fill_at"], row["last_emptied_at"], row["through"])


async def record_emptying(conn: asyncpg.Connection, tenant_id: UUID, device_id: UUID, at: datetime,
                          source: str, fill_before: float | None = None, stop_id: UUID | None = None,
                          fill_after: float | None = None) -> bool:
    """Note that a bin was emptied (once per bin, time and source); True when it was new."""
    status = await conn.execute(
        """insert into bin_emptyings (tenant_id, device_id, at, source, fill_before, fill_after, stop_id)
           values ($1, $2, $3, $4, $5, $6, $7)
           on conflict (tenant_id, device_id, at, source) do nothing""",
        tenant_id, device_id, at, source, fill_before, fill_after, stop_id)
    return status.endswith(" 1")


async def forget_emptying(conn: asyncpg.Connection, tenant_id: UUID, stop_id: UUID) -> None:
    """The control room corrected a done stop to skipped: the bin was not emptied after all."""
    await conn.execute("delete from bin_emptyings where tenant_id = $1 and stop_id = $2", tenant_id, stop_id)


class ForecastRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def threshold(self, tenant_id: UUID) -> float:
        value = await self.conn.fetchval(
            "select threshold_percent from collection_settings where tenant_id = $1", tenant_id)
        return DEFAULT_THRESHOLD_PERCENT if value is None else value

    async def timezone(self, tenant_id: UUID) -> str:
        return await self.conn.fetchval("select timezone from tenants where id = $1", tenant_id)

    async def device_kind(self, tenant_id: UUID, device_id: UUID) -> asyncpg.Record | None:
        return await self.conn.fetchrow("select kind, status from devices where tenant_id = $1 and id = $2",
                                        tenant_id, device_id)

    async def bins(self, tenant_id: UUID, *, device_ids: Sequence[UUID] | None, district: str | None,
                   waste_kind: str | None, after: UUID | None = None, limit: int | None = None
                   ) -> list[asyncpg.Record]:
        """The city's waste bins (not decommissioned) with their fill now and their profile."""
        return await self.conn.fetch(
            f"""select d.id, d.endpoint, d.district, d.attributes->>'waste_kind' as waste_kind,
                       s.v_num as fill_now, s.time as fill_at,
                       p.rates, p.weights, p.residual_sd, p.last_fill, p.last_fill_at,
                       p.last_emptied_at, p.through,
                       (select max(e.at) from bin_emptyings e
                         where e.tenant_id = d.tenant_id and e.device_id = d.id) as emptied_at
                  from devices d
                  left join device_state s on s.device_id = d.id and s.path = '{FILL_PATH}'
                  left join bin_fill_profiles p on p.tenant_id = d.tenant_id and p.device_id = d.id
                 where d.tenant_id = $1 and d.kind = 'waste_bin' and d.status <> 'decommissioned'
                   and ($2::uuid[] is null or d.id = any($2))
                   and ($3::text is null or d.district = $3)
                   and ($4::text is null or d.attributes->>'waste_kind' = $4)
                   and ($5::uuid is null or d.id > $5)
                 order by d.id
                 limit $6""",
            tenant_id, list(device_ids) if device_ids is not None else None, district, waste_kind,
            after, limit)

    async def learned_profiles(self, tenant_id: UUID, waste_kinds: Sequence[str | None],
                               min_history_h: float) -> list[asyncpg.Record]:
        """Profiles of the city's bins of those kinds that learned enough to lend their rates."""
        return await self.conn.fetch(
            """select d.district, d.attributes->>'waste_kind' as waste_kind, p.rates, p.weights,
                      p.residual_sd, p.last_fill, p.last_fill_at, p.last_emptied_at, p.through
                 from bin_fill_profiles p
                 join devices d on d.tenant_id = p.tenant_id and d.id = p.device_id
                where p.tenant_id = $1 and d.status <> 'decommissioned'
                  and coalesce(d.attributes->>'waste_kind', '') = any($2::text[])
                  and (select sum(w) from unnest(p.weights) w) >= $3""",
            tenant_id, [k or "" for k in set(waste_kinds)], min_history_h)

    # -- the scheduler's pass -------------------------------------------------------------------

    async def cities_with_bins(self) -> list[UUID]:
        """Every city with a waste bin in service (the system side: the pass goes city by city)."""
        return [r["tenant_id"] for r in await self.conn.fetch(
            "select distinct tenant_id from devices where kind = 'waste_bin' and status <> 'decommissioned'")]

    async def bins_to_learn(self, tenant_id: UUID, after: UUID | None, limit: int) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """select d.id, p.rates, p.weights, p.residual_sd, p.last_fill, p.last_fill_at,
                      p.last_emptied_at, p.through
                 from devices d
                 left join bin_fill_profiles p on p.tenant_id = d.tenant_id and p.device_id = d.id
                where d.tenant_id = $1 and d.kind = 'waste_bin' and d.status <> 'decommissioned'
                  and ($2::uuid is null or d.id > $2)
                order by d.id limit $3""", tenant_id, after, limit)

    async def readings(self, tenant_id: UUID, since: dict[UUID, datetime]) -> dict[UUID, list[Reading]]:
        """Each bin's fill readings after its own `since`, oldest first."""
        rows = await self.conn.fetch(
            f"""select t.device_id, t.time, t.v_num
                  from unnest($2::uuid[], $3::timestamptz[]) as b(device_id, since)
                  join telemetry t on t.device_id = b.device_id and t.path = '{FILL_PATH}'
                                  and t.time > b.since
                 where t.tenant_id = $1 and t.v_num is not null
                 order by t.device_id, t.time""",
            tenant_id, list(since), list(since.values()))
        out: dict[UUID, list[Reading]] = {}
        for r in rows:
            out.setdefault(r["device_id"], []).append(Reading(r["time"], r["v_num"]))
        return out

    async def known_emptyings(self, tenant_id: UUID, since: dict[UUID, datetime]) -> dict[UUID, list[datetime]]:
        rows = await self.conn.fetch(
            """select e.device_id, e.at
                 from unnest($2::uuid[], $3::timestamptz[]) as b(device_id, since)
                 join bin_emptyings e on e.tenant_id = $1 and e.device_id = b.device_id and e.at > b.since
                where e.source <> 'drop'""",
            tenant_id, list(since), list(since.values()))
        out: dict[UUID, list[datetime]] = {}
        for r in rows:
            out.setdefault(r["device_id"], []).append(r["at"])
        return out

    async def record_executes(self, tenant_id: UUID, since: datetime) -> int:
        """The "emptied" Executes (/3435/0/9) the bins acknowledged, as emptyings (idempotent).

        Those a route's stop sent (batch origin 'collection', fleet.collection.driving) are
        skipped: the stop marked done already recorded that emptying as a 'stop' row, and one
        emptying counted twice would halve the bin's learned fill rate. The partial index
        `commands_emptied` (migration 0031) keeps this scan to the Executes of its kind."""
        status = await self.conn.execute(
            f"""insert into bin_emptyings (tenant_id, device_id, at, source)
                select c.tenant_id, c.device_id, c.completed_at, 'execute'
                  from commands c
                  join command_batches b on b.id = c.batch_id
                  join devices d on d.id = c.device_id and d.tenant_id = c.tenant_id
                 where c.tenant_id = $1 and c.path = '{EMPTIED_PATH}' and c.operation = 'execute'
                   and c.status = 'succeeded' and c.completed_at > $2 and b.origin <> '{STOP_ORIGIN}'
                on conflict (tenant_id, device_id, at, source) do nothing""", tenant_id, since)
        return int(status.rsplit(" ", 1)[-1])

    async def record_drops(self, tenant_id: UUID, drops: Sequence[tuple[UUID, Emptying]]) -> None:
        await self.conn.executemany(
            """insert into bin_emptyings (tenant_id, device_id, at, source, fill_before, fill_after)
               values ($1, $2, $3, 'drop', $4, $5)
               on conflict (tenant_id, device_id, at, source) do nothing""",
            [(tenant_id, device_id, e.at, e.fill_before, e.fill_after) for device_id, e in drops])

    async def save_profiles(self, tenant_id: UUID, profiles: Sequence[tuple[UUID, Profile]]) -> None:
        await self.conn.executemany(
            """insert into bin_fill_profiles (tenant_id, device_id, rates, weights, residual_sd,
                   last_fill, last_fill_at, last_emptied_at, through, updated_at)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
               on conflict (tenant_id, device_id) do update set
                   rates = excluded.rates, weights = excluded.weights,
                   residual_sd = excluded.residual_sd, last_fill = excluded.last_fill,
                   last_fill_at = excluded.last_fill_at, last_emptied_at = excluded.last_emptied_at,
                   through = excluded.through, updated_at = now()""",
            [(tenant_id, device_id, list(p.rates), list(p.weights), p.residual_sd, p.last_fill,
              p.last_fill_at, p.last_emptied_at, p.through) for device_id, p in profiles])
