"""SQL for alarms: merging findings set-wise, the lifecycle's writes, lists, counts and settings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from fleet.alarms.models import OPEN_STATUSES, Alarm, AlarmCounts, AlarmQuery, AlarmStatus, Severity, Shelving
from fleet.registry.models import DeviceFilter
from fleet.registry.repository import DeviceRepository, FilterSql, degrees_around, great_circle_m

# An alarm as people see it: with its device's place and the latest shelving still running.
ALARM_COLUMNS = """a.id, a.seq, a.tenant_id, a.device_id, a.type, a.severity, a.status, a.count,
    a.first_seen, a.last_seen, a.value, a.detail, a.source, a.acknowledged_at, a.acknowledged_by,
    a.acknowledge_note, a.cleared_at, a.cleared_by, a.clear_reason, a.verified_at, a.version,
    a.created_at, a.updated_at, d.kind, d.district, d.lat, d.lon,
    greatest((select max(s.until) from alarm_shelves s
              where s.tenant_id = a.tenant_id and s.alarm_id = a.id and s.until > now()),
             (select max(s.until) from alarm_shelves s
              where s.tenant_id = a.tenant_id and s.device_id = a.device_id and s.until > now()))
        as shelved_until"""
SWEEP_LOCK = 0x616C61726D73  # "alarms"
ALARMS_WITH_DEVICES = "alarms a join devices d on d.tenant_id = a.tenant_id and d.id = a.device_id"
SHELVED = ("(exists (select 1 from alarm_shelves s where s.tenant_id = a.tenant_id and s.alarm_id = a.id"
           " and s.until > now()) or exists (select 1 from alarm_shelves s where s.tenant_id = a.tenant_id"
           " and s.device_id = a.device_id and s.until > now()))")

# Settings of each (city, device): the city's row, then the row of the device's group with
# settings whose name sorts first (a device in several such groups gets one answer, always).
_LAYERS = """
    left join alarm_settings c on c.tenant_id = {k}.tenant_id and c.group_id is null
    left join lateral (
        select s.settings from device_group_members m
        join device_groups dg on dg.tenant_id = m.tenant_id and dg.id = m.group_id
        join alarm_settings s on s.tenant_id = dg.tenant_id and s.group_id = dg.id
        where m.tenant_id = {k}.tenant_id and m.device_id = {k}.{device}
        order by dg.name, dg.id limit 1) g on true"""
SETTINGS_LAYERS = """
    select k.tenant_id, k.device_id, c.settings as city, g.settings as grp
    from unnest($1::uuid[], $2::uuid[]) as k(tenant_id, device_id)""" + _LAYERS.format(k="k", device="device_id")


def alarm_from_row(row: asyncpg.Record) -> Alarm:
    distance = row.get("distance_m")
    return Alarm(
        id=row["id"], tenant_id=row["tenant_id"], device_id=row["device_id"], type=row["type"],
        severity=Severity(row["severity"]), status=AlarmStatus(row["status"]), count=row["count"],
        first_seen=row["first_seen"], last_seen=row["last_seen"], value=row["value"], detail=row["detail"],
        source=row["source"], acknowledged_at=row["acknowledged_at"], acknowledged_by=row["acknowledged_by"],
        acknowledge_note=row["acknowledge_note"], cleared_at=row["cleared_at"], cleared_by=row["cleared_by"],
        clear_reason=row["clear_reason"], shelved_until=row["shelved_until"], version=row["version"],
        created_at=row["created_at"], updated_at=row["updated_at"], verified_at=row["verified_at"],
        kind=row["kind"], district=row["district"], lat=row["lat"], lon=row["lon"],
        distance_m=None if distance is None else round(distance))


class AlarmRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # --- merging findings (system transaction, any city) ---

    async def lock_for_findings(self, keys: Sequence[tuple[UUID, UUID, str]]) -> list[asyncpg.Record]:
        """For each (city, device, type): its open alarm, or its latest alarm when a work order
        cleared that and the device has not yet proven it. Most keys have neither: this reads
        two partial indexes and writes nothing. Locked in id order, so two batches never deadlock."""
        tenants, devices, types = zip(*keys, strict=True)
        return await self.conn.fetch(
            """with found as (
                   select f.id from unnest($1::uuid[], $2::uuid[], $3::text[]) as k(tenant_id, device_id, type)
                   cross join lateral (
                       select a.id from alarms a where a.tenant_id = k.tenant_id and a.device_id = k.device_id
                          and a.type = k.type and a.status <> 'cleared'
                       union all
                       select a.id from alarms a where a.tenant_id = k.tenant_id and a.device_id = k.device_id
                          and a.type = k.type and a.clear_reason = 'work_order' and a.verified_at is null
                          and not exists (select 1 from alarms b where b.tenant_id = a.tenant_id
                                          and b.device_id = a.device_id and b.type = a.type and b.seq > a.seq)
                   ) f)
               select a.id, a.tenant_id, a.device_id, a.type, a.status, a.severity, a.clearing_since
               from alarms a where a.id in (select id from found)
                 -- checked again on the row as locked: another node may have cleared it meanwhile
                 and (a.status <> 'cleared' or (a.clear_reason = 'work_order' and a.verified_at is null))
               order by a.id for update of a""",
            list(tenants), list(devices), list(types))

    async def settings_layers(self, pairs: Sequence[tuple[UUID, UUID]]) -> dict[tuple[UUID, UUID], tuple]:
        tenants, devices = zip(*pairs, strict=True)
        rows = await self.conn.fetch(SETTINGS_LAYERS, list(tenants), list(devices))
        return {(r["tenant_id"], r["device_id"]): (r["city"] or {}, r["grp"] or {}) for r in rows}

    async def merge_presence(self, rows: Sequence[tuple]) -> None:
        """(id, last_seen, added occurrences, clearing_since, value, detail, severity, changed):
        `changed` bumps the version people see; a continuing presence only moves last_seen."""
        ids, seen, added, clearing, values, details, severities, changed = zip(*rows, strict=True)
        await self.conn.execute(
            """update alarms a set last_seen = greatest(a.last_seen, u.last_seen), count = a.count + u.added,
                      clearing_since = u.clearing_since, value = u.value, detail = u.detail,
                      severity = u.severity, version = a.version + u.changed::int,
                      updated_at = case when u.changed then now() else a.updated_at end
               from unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::timestamptz[], $5::jsonb[],
                           $6::text[], $7::text[], $8::bool[])
                    as u(id, last_seen, added, clearing_since, value, detail, severity, changed)
               where a.id = u.id""",
            list(ids), list(seen), list(added), list(clearing), list(values), list(details),
            list(severities), list(changed))

    async def insert_raised(self, rows: Sequence[tuple]) -> list[tuple[UUID, bool, bool]]:
        """(tenant, device, type, severity, count, first_seen, last_seen, clearing_since, value,
        detail, source) -> (id, inserted, count grew). Another node raising the same alarm at the
        same moment merges into it (the unique open index) as a repeat, not a failed batch."""
        columns = list(zip(*rows, strict=True))
        result = await self.conn.fetch(
            """insert into alarms (tenant_id, device_id, type, severity, count, first_seen, last_seen,
                                   clearing_since, value, detail, source)
               select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[],
                                    $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::jsonb[],
                                    $10::text[], $11::text[])
               on conflict (tenant_id, device_id, type) where status <> 'cleared' do update
                   set count = alarms.count + excluded.count - (alarms.clearing_since is null)::int,
                       last_seen = greatest(alarms.last_seen, excluded.last_seen),
                       clearing_since = excluded.clearing_since, value = excluded.value,
                       detail = excluded.detail,
                       version = alarms.version + (excluded.count > (alarms.clearing_since is null)::int)::int,
                       updated_at = case when excluded.count > (alarms.clearing_since is null)::int
                                         then now() else alarms.updated_at end
               returning id, (xmax = 0) as inserted, updated_at = now() as changed""",
            *[list(c) for c in columns])
        return [(r["id"], r["inserted"], r["changed"]) for r in result]

    async def start_clearing(self, ids: Sequence[UUID], since: Sequence[datetime]) -> None:
        await self.conn.execute(
            """update alarms a set clearing_since = u.since
               from unnest($1::uuid[], $2::timestamptz[]) as u(id, since)
               where a.id = u.id and a.clearing_since is null""",
            list(ids), list(since))

    async def clear(self, ids: Sequence[UUID], reason: str, by: str, at: datetime | None = None,
                    note: str | None = None, *, tenant_id: UUID | None = None) -> list[UUID]:
        """Clear these alarms if still open (and of `tenant_id`, when given); returns those it cleared."""
        rows = await self.conn.fetch(
            """update alarms set status = 'cleared', cleared_at = coalesce($4, now()), cleared_by = $3,
                                 clear_reason = $2, clearing_since = null, version = version + 1,
                                 updated_at = now(),
                                 detail = case when $5::text is null or $5 = '' then detail
                                          else left(detail || case when detail = '' then '' else E'\n' end
                                                    || $5, 4000) end
               where id = any($1::uuid[]) and status <> 'cleared' and ($6::uuid is null or tenant_id = $6)
               returning id""",
            list(ids), reason, by, at, note, tenant_id)
        return [r["id"] for r in rows]

    async def reported_gone(self, tenant_id: UUID, ids: Sequence[UUID]) -> list[UUID]:
        """Of these unproven alarms, those whose condition the device last reported gone: still
        clearing under hysteresis, or cleared by the condition and not raised again since."""
        rows = await self.conn.fetch(
            """select a.id from alarms a
               where a.tenant_id = $1 and a.id = any($2::uuid[]) and a.verified_at is null
                 and (a.clearing_since is not null
                      or (a.status = 'cleared' and a.clear_reason = 'condition'
                          and not exists (select 1 from alarms o
                                          where o.tenant_id = a.tenant_id and o.device_id = a.device_id
                                            and o.type = a.type and o.status <> 'cleared')))
               order by a.seq""",
            tenant_id, list(ids))
        return [r["id"] for r in rows]

    async def verify(self, ids: Sequence[UUID], ats: Sequence[datetime]) -> None:
        await self.conn.execute(
            """update alarms a set verified_at = u.at, version = a.version + 1, updated_at = now()
               from unnest($1::uuid[], $2::timestamptz[]) as u(id, at)
               where a.id = u.id and a.verified_at is null""", list(ids), list(ats))

    async def rendered(self, ids: Sequence[UUID]) -> list[Alarm]:
        rows = await self.conn.fetch(
            f"select {ALARM_COLUMNS} from {ALARMS_WITH_DEVICES} where a.id = any($1::uuid[]) order by a.seq",
            list(ids))
        return [alarm_from_row(r) for r in rows]

    async def try_sweep_lock(self) -> bool:
        """One sweep at a time across every node (until this transaction ends): two at once
        would raise the same offline alarm twice."""
        return await self.conn.fetchval("select pg_try_advisory_xact_lock($1)", SWEEP_LOCK)

    async def due_to_clear(self, now: datetime, default_minutes: float, limit: int) -> list[asyncpg.Record]:
        """Open alarms whose condition has been absent for their device's clear_after_minutes
        (the group's, else the city's, else the default), oldest absence first; rows another
        node is sweeping are skipped, not waited for. Judged here, not after a LIMIT: a thousand
        alarms of a slow-clearing group must not hold back every other city's clears."""
        return await self.conn.fetch(
            f"""select a.id, a.tenant_id, a.device_id, a.type, a.clearing_since from alarms a {_LAYERS.format(k="a", device="device_id")}
                where a.status <> 'cleared' and a.clearing_since is not null
                  and a.clearing_since <= $1::timestamptz - interval '1 minute' * coalesce(
                      (g.settings ->> 'clear_after_minutes')::float8,
                      (c.settings ->> 'clear_after_minutes')::float8, $2::float8)
                order by a.clearing_since limit $3 for update of a skip locked""", now, default_minutes, limit)

    async def offline_devices(self, now: datetime, default_grace_minutes: float, limit: int) -> list[asyncpg.Record]:
        """Devices whose registration expired (offline_since) longer ago than their
        offline_grace_minutes, with no device_offline alarm open or cleared during this absence
        (a manual clear is not undone by the next sweep). The grace is judged here, before the
        LIMIT, so devices of a long-grace group never fill the batch for everyone else."""
        return await self.conn.fetch(
            f"""select d.tenant_id, d.id as device_id, d.offline_since from devices d {_LAYERS.format(k="d", device="id")}
                where d.offline_since is not null and d.status = 'offline'
                  and d.offline_since <= $1::timestamptz - interval '1 minute' * coalesce(
                      (g.settings ->> 'offline_grace_minutes')::float8,
                      (c.settings ->> 'offline_grace_minutes')::float8, $2::float8)
                  and not exists (select 1 from alarms a where a.tenant_id = d.tenant_id
                                  and a.device_id = d.id and a.type = 'device_offline'
                                  and (a.status <> 'cleared' or a.cleared_at >= d.offline_since))
                order by d.offline_since limit $3""", now, default_grace_minutes, limit)

    # --- what people do (tenant transaction) ---

    async def get(self, tenant_id: UUID, alarm_id: UUID, *, for_update: bool = False) -> Alarm | None:
        lock = " for update of a" if for_update else ""
        row = await self.conn.fetchrow(
            f"select {ALARM_COLUMNS} from {ALARMS_WITH_DEVICES} where a.tenant_id = $1 and a.id = $2{lock}",
            tenant_id, alarm_id)
        return alarm_from_row(row) if row else None

    async def open_for_device(self, tenant_id: UUID, device_id: UUID) -> list[asyncpg.Record]:
        """The device's open alarms, most severe first, locked in id order like every other
        writer of alarms (lock_for_findings): locked in severity order, a citizen's report and a
        batch of findings about the same device could each hold the alarm the other waits for."""
        return await self.conn.fetch(
            """with locked as (
                   select id, type, severity, last_seen from alarms
                   where tenant_id = $1 and device_id = $2 and status <> 'cleared'
                   order by id for update)
               select id, type, severity from locked
               order by array_position(array['critical','major','minor','warning'], severity), last_seen desc""",
            tenant_id, device_id)

    async def repeat(self, alarm_id: UUID, at: datetime) -> None:
        await self.conn.execute(
            """update alarms set count = count + 1, last_seen = greatest(last_seen, $2), clearing_since = null,
                                 version = version + 1, updated_at = now() where id = $1""", alarm_id, at)

    async def acknowledge(self, alarm_id: UUID, by: str, note: str) -> None:
        await self.conn.execute(
            """update alarms set status = 'acknowledged', acknowledged_at = now(), acknowledged_by = $2,
                                 acknowledge_note = $3, version = version + 1, updated_at = now()
               where id = $1""", alarm_id, by, note)

    async def shelve(self, tenant_id: UUID, *, alarm_id: UUID | None, device_id: UUID | None,
                     until: datetime, reason: str, by: str) -> Shelving:
        row = await self.conn.fetchrow(
            """insert into alarm_shelves (tenant_id, alarm_id, device_id, until, reason, created_by)
               values ($1, $2, $3, $4, $5, $6) returning *""",
            tenant_id, alarm_id, device_id, until, reason, by)
        return Shelving(row["id"], row["alarm_id"], row["device_id"], row["until"], row["reason"],
                        row["created_by"], row["created_at"])

    async def touch(self, ids: Sequence[UUID]) -> None:
        """A change people see that lives beside the row (a shelving): a new version."""
        await self.conn.execute("update alarms set version = version + 1, updated_at = now()"
                                " where id = any($1::uuid[])", list(ids))

    async def open_ids_for_device(self, tenant_id: UUID, device_id: UUID) -> list[UUID]:
        rows = await self.conn.fetch("select id from alarms where tenant_id = $1 and device_id = $2"
                                     " and status <> 'cleared'", tenant_id, device_id)
        return [r["id"] for r in rows]

    async def list(self, tenant_id: UUID, query: AlarmQuery, *, after: tuple | None,
                   limit: int) -> tuple[list[Alarm], tuple | None]:
        """One page: by distance then seq with `near`, else newest first (seq descending)."""
        sql = await self._where(tenant_id, query)
        if query.near:
            distance = sql.distance
            if after is not None:
                sql.clauses.append(f"({distance}, a.seq) > ({sql.param(after[0])}::float8, {sql.param(after[1])})")
            order = f"{distance}, a.seq"
            extra = f", {distance} as distance_m"
        else:
            if after is not None:
                sql.clauses.append(f"a.seq < {sql.param(after[0])}")
            order, extra = "a.seq desc", ""
        rows = await self.conn.fetch(
            f"select {ALARM_COLUMNS}{extra} from {ALARMS_WITH_DEVICES} where {' and '.join(sql.clauses)}"
            f" order by {order} limit {sql.param(limit + 1)}", *sql.params)
        more = len(rows) > limit
        rows = rows[:limit]
        if not more:
            return [alarm_from_row(r) for r in rows], None
        last = rows[-1]
        key = (last["distance_m"], last["seq"]) if query.near else (last["seq"],)
        return [alarm_from_row(r) for r in rows], key

    async def counts(self, tenant_id: UUID, query: AlarmQuery) -> AlarmCounts:
        sql = await self._where(tenant_id, query)
        rows = await self.conn.fetch(
            f"""select grouping(a.severity) as no_severity, grouping(d.district) as no_district,
                       grouping(a.type) as no_type, a.severity, d.district, a.type, count(*) as n
                from {ALARMS_WITH_DEVICES} where {' and '.join(sql.clauses)}
                group by grouping sets ((a.severity), (d.district), (a.type), ())""", *sql.params)
        by_severity: dict[str, int] = {}
        by_district: dict[str, int] = {}
        by_type: dict[str, int] = {}
        total = 0
        for r in rows:
            if not r["no_severity"]:
                by_severity[r["severity"]] = r["n"]
            elif not r["no_district"]:
                by_district[r["district"] or ""] = r["n"]  # "": devices with no district
            elif not r["no_type"]:
                by_type[r["type"]] = r["n"]
            else:
                total = r["n"]
        return AlarmCounts(total, by_severity, by_district, by_type)

    async def _where(self, tenant_id: UUID, query: AlarmQuery) -> _Where:
        """A group filter means the group's devices, static or saved filter (the registry's own
        SQL); raises NotFound for a group the city does not have."""
        group = None
        if query.group_id is not None:
            group = await DeviceRepository(self.conn).resolve(tenant_id, DeviceFilter(group_id=query.group_id))
        return _Where(tenant_id, query, group)

    # --- settings ---

    async def stored_settings(self, tenant_id: UUID, group_id: UUID | None) -> dict | None:
        if group_id is None:
            return await self.conn.fetchval(
                "select settings from alarm_settings where tenant_id = $1 and group_id is null", tenant_id)
        return await self.conn.fetchval(
            "select settings from alarm_settings where tenant_id = $1 and group_id = $2", tenant_id, group_id)

    async def store_settings(self, tenant_id: UUID, group_id: UUID | None, settings: dict[str, Any]) -> None:
        target = "(tenant_id) where group_id is null" if group_id is None else \
            "(tenant_id, group_id) where group_id is not null"
        await self.conn.execute(
            f"""insert into alarm_settings (tenant_id, group_id, settings) values ($1, $2, $3)
                on conflict {target} do update set settings = excluded.settings,
                    version = alarm_settings.version + 1, updated_at = now()""",
            tenant_id, group_id, settings)

    async def delete_settings(self, tenant_id: UUID, group_id: UUID) -> bool:
        status = await self.conn.execute(
            "delete from alarm_settings where tenant_id = $1 and group_id = $2", tenant_id, group_id)
        return status != "DELETE 0"


class _Where:
    """The WHERE clause of an alarm list from fixed fragments and numbered parameters."""

    def __init__(self, tenant_id: UUID, q: AlarmQuery, group: list[DeviceFilter] | None = None) -> None:
        self.params: list[Any] = []
        self.clauses = [f"a.tenant_id = {self.param(tenant_id)}"]
        if set(q.statuses) == set(OPEN_STATUSES):
            # As the partial index alarms_open_seq says it, which a parameter could not prove.
            self.clauses.append("a.status <> 'cleared'")
        else:
            self.clauses.append(f"a.status = any({self.param(list(q.statuses))}::text[])")
        for column, value in (("a.severity", q.severity), ("a.type", q.type), ("d.kind", q.kind),
                              ("d.district", q.district), ("a.device_id", q.device_id)):
            if value is not None:
                self.clauses.append(f"{column} = {self.param(value)}")
        if group:
            devices = FilterSql(tenant_id, *group, first_param=len(self.params) + 1)
            self.params += devices.params
            self.clauses.append(devices.where)
        if q.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = q.bbox
            self.clauses.append(f"d.lat between {self.param(min_lat)} and {self.param(max_lat)}"
                                f" and d.lon between {self.param(min_lon)} and {self.param(max_lon)}")
        self.distance = ""
        if q.near is not None:
            lat, lon, radius = q.near
            # A box first, which the devices' position index narrows; the exact distance after.
            dlat, dlon = degrees_around(lat, radius)
            self.clauses.append(f"d.lat between {self.param(lat - dlat)} and {self.param(lat + dlat)}"
                                f" and d.lon between {self.param(lon - dlon)} and {self.param(lon + dlon)}")
            self.distance = great_circle_m(f"{self.param(lat)}::float8", f"{self.param(lon)}::float8")
            self.clauses.append(f"{self.distance} <= {self.param(float(radius))}")
        if q.shelved is not None:
            self.clauses.append(SHELVED if q.shelved else f"not {SHELVED}")

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"
