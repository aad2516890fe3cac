"""SQL for devices: create, read, change, decommission, filtered listing and bulk insert."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from fleet.errors import FieldError, NotFound, ValidationFailed
from fleet.registry.filters import parse_filter
from fleet.registry.models import (Device, DeviceFilter, DeviceKind, DeviceStatus, Location,
                                   NewDevice)

EARTH_RADIUS_M = 6_371_008.8
# Rows per COPY of a bulk insert: each is a few tens of milliseconds of the event loop.
COPY_CHUNK = 2_000
# Districts an unknown district's error names; GET /api/v1/districts lists them all.
KNOWN_DISTRICTS_SHOWN = 10

DEVICE_COLUMNS = """d.id, d.seq, d.kind, d.endpoint, d.serial, d.manufacturer, d.model,
    d.firmware_version, d.lat, d.lon, d.district, d.address, d.installed_at, d.status, d.tags,
    d.attributes, d.created_at, d.updated_at, d.decommissioned_at"""

INSERT_COLUMNS = ("tenant_id", "kind", "endpoint", "serial", "manufacturer", "model",
                  "firmware_version", "lat", "lon", "district", "address", "installed_at",
                  "status", "tags", "attributes")

# Great-circle distance in metres between two points; least() keeps rounding from asin(>1).
_HAVERSINE = ("2 * {r} * asin(least(1, sqrt(power(sin(radians({to_lat} - {lat}) / 2), 2) + cos(radians({lat})) "
              "* cos(radians({to_lat})) * power(sin(radians({to_lon} - {lon}) / 2), 2))))")


def great_circle_m(lat: str, lon: str, to_lat: str = "d.lat", to_lon: str = "d.lon") -> str:
    """SQL for the metres from `lat`, `lon` to the device `d` (or to `to_lat`, `to_lon`); all are
    SQL expressions, e.g. "$3::float8"."""
    return _HAVERSINE.format(r=EARTH_RADIUS_M, lat=lat, lon=lon, to_lat=to_lat, to_lon=to_lon)


def degrees_around(lat: float, radius_m: float) -> tuple[float, float]:
    """Half the height and width, in degrees, of a box holding every point within `radius_m` of
    latitude `lat`: plain ranges an index narrows before the exact distance decides."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    return dlat, min(180.0, dlat / max(math.cos(math.radians(lat)), 1e-6))


def device_from_row(row: asyncpg.Record, distance_m: float | None = None) -> Device:
    """A device from its row; `distance_m` (from `near`) is shown in whole metres."""
    return Device(
        id=row["id"], kind=DeviceKind(row["kind"]), endpoint=row["endpoint"], serial=row["serial"],
        manufacturer=row["manufacturer"], model=row["model"],
        firmware_version=row["firmware_version"], location=Location(row["lat"], row["lon"]),
        district=row["district"], address=row["address"], installed_at=row["installed_at"],
        status=DeviceStatus(row["status"]), tags=list(row["tags"]), attributes=row["attributes"],
        created_at=row["created_at"], updated_at=row["updated_at"],
        decommissioned_at=row["decommissioned_at"],
        distance_m=None if distance_m is None else round(distance_m))


def new_device_record(tenant_id: UUID, device: NewDevice) -> tuple:
    return (tenant_id, device.kind.value, device.endpoint, device.serial, device.manufacturer,
            device.model, device.firmware_version, device.lat, device.lon, device.district,
            device.address, device.installed_at, device.status.value, list(device.tags),
            {k: (v.value if hasattr(v, "value") else v) for k, v in device.attributes.items()})


class FilterSql:
    """Builds the WHERE clause of device filters (ANDed) from fixed fragments and numbered parameters.

    A filter's `group_id` must name a group of static members here; the repository resolves
    dynamic groups into their saved filter before building SQL (see `resolve`).
    """

    def __init__(self, tenant_id: UUID, *filters: DeviceFilter, first_param: int = 1) -> None:
        self.params: list[Any] = []
        self._next = first_param
        self.distance_sql: str | None = None
        clauses = [f"d.tenant_id = {self.param(tenant_id)}"]
        if all(f.status is None for f in filters):
            # Decommissioned devices keep their history but leave everyday lists.
            clauses.append("d.status <> 'decommissioned'")
        for f in filters:
            clauses += self._clauses(f)
        self.where = " and ".join(clauses)

    def _clauses(self, f: DeviceFilter) -> list[str]:
        clauses = []
        if f.kind is not None:
            clauses.append(f"d.kind = {self.param(f.kind.value)}")
        if f.status is not None:
            clauses.append(f"d.status = {self.param(f.status.value)}")
        if f.district is not None:
            clauses.append(f"d.district = {self.param(f.district)}")
        if f.tag is not None:
            clauses.append(f"d.tags @> array[{self.param(f.tag)}::text]")
        if f.firmware is not None:
            clauses.append(f"d.firmware_version = {self.param(f.firmware)}")
        if f.group_id is not None:
            clauses.append("exists (select 1 from device_group_members m "
                           f"where m.group_id = {self.param(f.group_id)} and m.device_id = d.id)")
        if f.bbox is not None:
            b = f.bbox
            clauses.append(self._box(b.min_lon, b.min_lat, b.max_lon, b.max_lat))
        if f.near is not None:
            c = f.near
            # A bounding box first, so the index narrows the rows; the exact distance after.
            dlat, dlon = degrees_around(c.lat, c.radius_m)
            clauses.append(self._box(c.lon - dlon, c.lat - dlat, c.lon + dlon, c.lat + dlat))
            lat, lon = self.param(c.lat), self.param(c.lon)
            distance = great_circle_m(f"{lat}::float8", f"{lon}::float8")
            clauses.append(f"{distance} <= {self.param(float(c.radius_m))}")
            self.distance_sql = self.distance_sql or distance
        return clauses

    def _box(self, min_lon: float, min_lat: float, max_lon: float, max_lat: float) -> str:
        # Plain ranges, not point <@ box: under row-level security only leakproof operators may
        # use an index, and b-tree comparisons on floats are (index devices_lat_lon).
        return (f"d.lat between {self.param(min_lat)} and {self.param(max_lat)} "
                f"and d.lon between {self.param(min_lon)} and {self.param(max_lon)}")

    def param(self, value: Any) -> str:
        self.params.append(value)
        placeholder = f"${self._next}"
        self._next += 1
        return placeholder


class DeviceRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(self, tenant_id: UUID, device: NewDevice) -> Device:
        placeholders = ", ".join(f"${i}" for i in range(1, len(INSERT_COLUMNS) + 1))
        row = await self.conn.fetchrow(
            f"insert into devices as d ({', '.join(INSERT_COLUMNS)}) values ({placeholders}) "
            f"returning {DEVICE_COLUMNS}", *new_device_record(tenant_id, device))
        return device_from_row(row)

    async def insert_many(self, tenant_id: UUID, devices: Sequence[NewDevice]) -> list[Device]:
        """COPY into a scratch table, then one INSERT: constraint errors surface as one exception."""
        await self.conn.execute(
            "create temp table device_import (like devices including defaults including identity) on commit drop")
        # Tens of thousands of rows: Python's share runs in a thread, and the COPY goes in chunks,
        # since asyncpg encodes one COPY's records without giving the event loop a turn.
        records = await asyncio.to_thread(lambda: [new_device_record(tenant_id, d) for d in devices])
        for start in range(0, len(records), COPY_CHUNK):
            await self.conn.copy_records_to_table(
                "device_import", records=records[start:start + COPY_CHUNK], columns=list(INSERT_COLUMNS))
        rows = await self.conn.fetch(
            f"insert into devices as d ({', '.join(INSERT_COLUMNS)}) "
            f"select {', '.join(INSERT_COLUMNS)} from device_import order by seq returning {DEVICE_COLUMNS}")
        return await asyncio.to_thread(lambda: [device_from_row(r) for r in rows])

    async def get(self, tenant_id: UUID, device_id: UUID, *, for_update: bool = False) -> Device | None:
        lock = " for update" if for_update else ""
        row = await self.conn.fetchrow(
            f"select {DEVICE_COLUMNS} from devices d where d.tenant_id = $1 and d.id = $2{lock}",
            tenant_id, device_id)
        return device_from_row(row) if row else None

    async def update(self, tenant_id: UUID, device_id: UUID, fields: dict[str, Any],
                     attributes: dict[str, Any]) -> Device:
        assignments, params = [], [tenant_id, device_id]
        for name, value in fields.items():
            params.append(value.value if hasattr(value, "value") else
                          list(value) if isinstance(value, tuple) else value)
            assignments.append(f"{name} = ${len(params)}")
        if attributes:
            set_attrs = {k: (v.value if hasattr(v, "value") else v) for k, v in attributes.items()
                         if v is not None}
            dropped = [k for k, v in attributes.items() if v is None]
            params += [set_attrs, dropped]
            assignments.append(f"attributes = (attributes || ${len(params) - 1}::jsonb) - ${len(params)}::text[]")
        assignments.append("updated_at = now()")
        row = await self.conn.fetchrow(
            f"update devices d set {', '.join(assignments)} where d.tenant_id = $1 and d.id = $2 "
            f"returning {DEVICE_COLUMNS}", *params)
        return device_from_row(row)

    async def decommission(self, tenant_id: UUID, device_id: UUID) -> Device:
        row = await self.conn.fetchrow(
            f"""update devices d set status = 'decommissioned', updated_at = now(),
                   decommissioned_at = coalesce(decommissioned_at, now())
                where d.tenant_id = $1 and d.id = $2 returning {DEVICE_COLUMNS}""",
            tenant_id, device_id)
        return device_from_row(row)

    async def require_known_district(self, tenant_id: UUID, district: str | None, field: str = "district") -> None:
        """ValidationFailed (422) naming `district` unless a device of the city (decommissioned
        too: its history is filtered by it) stands in it: a misspelt district would otherwise
        match nothing, and a command to it would reach no device without a word."""
        if district is None or await self.conn.fetchval(
                "select exists (select 1 from devices where tenant_id = $1 and district = $2)", tenant_id, district):
            return
        known = await self.conn.fetch(
            "select distinct district from devices where tenant_id = $1 and district is not null "
            "and status <> 'decommissioned' order by district limit $2", tenant_id, KNOWN_DISTRICTS_SHOWN + 1)
        names = [r["district"] for r in known]
        shown = ", ".join(names[:KNOWN_DISTRICTS_SHOWN]) + (", ..." if len(names) > KNOWN_DISTRICTS_SHOWN else "")
        detail = f"unknown district {district!r} (known: {shown or 'none'}; see GET /api/v1/districts)"
        raise ValidationFailed(detail, [FieldError(field, detail)])

    async def resolve(self, tenant_id: UUID, device_filter: DeviceFilter) -> list[DeviceFilter]:
        """Replace a dynamic group by its saved filter; raises NotFound for an unknown group, and
        ValidationFailed for a district no device stands in (a saved filter's is not checked:
        a group whose district emptied is just empty)."""
        await self.require_known_district(tenant_id, device_filter.district)
        if device_filter.group_id is None:
            return [device_filter]
        saved = await self.conn.fetchrow(
            "select filter from device_groups where tenant_id = $1 and id = $2",
            tenant_id, device_filter.group_id)
        if saved is None:
            raise NotFound(f"group {device_filter.group_id} not found")
        if saved["filter"] is None:
            return [device_filter]
        return [replace(device_filter, group_id=None), parse_filter(saved["filter"], allow_group=False)]

    async def list(self, tenant_id: UUID, device_filter: DeviceFilter, *, after: tuple | None,
                   limit: int) -> tuple[list[Device], tuple | None]:
        """One page and the key to continue after, if more follow: in `seq` order, key (seq,);
        with `near`, nearest first, key (distance in metres, seq), the exact distance (the
        devices show it rounded), so pages neither skip nor repeat a device."""
        sql = FilterSql(tenant_id, *await self.resolve(tenant_id, device_filter))
        near = sql.distance_sql
        if after is not None and len(after) != (2 if near else 1):
            raise ValidationFailed("invalid cursor", [FieldError(
                "cursor", "continues a list in another order (nearest first, or not)")])
        if near:
            start = (f" and ({near}, d.seq) > ({sql.param(float(after[0]))}::float8, {sql.param(after[1])})"
                     if after is not None else "")
            columns, order = f"{DEVICE_COLUMNS}, {near} as distance_m", f"{near}, d.seq"
        else:
            start = f" and d.seq > {sql.param(after[0])}" if after is not None else ""
            columns, order = DEVICE_COLUMNS, "d.seq"
        rows = await self.conn.fetch(
            f"select {columns} from devices d where {sql.where}{start} "
            f"order by {order} limit {sql.param(limit + 1)}", *sql.params)
        more = len(rows) > limit
        rows = rows[:limit]
        devices = [device_from_row(r, r["distance_m"] if near else None) for r in rows]
        if not more:
            return devices, None
        last = rows[-1]
        return devices, ((last["distance_m"], last["seq"]) if near else (last["seq"],))

    async def in_service(self, tenant_id: UUID, device_ids: list[UUID]) -> set[UUID]:
        """Which of these devices exist in the city and are not decommissioned."""
        rows = await self.conn.fetch(
            "select id from devices where tenant_id = $1 and id = any($2::uuid[]) "
            "and status <> 'decommissioned'", tenant_id, device_ids)
        return {r["id"] for r in rows}

    async def ids_matching(self, tenant_id: UUID, device_filter: DeviceFilter) -> list[UUID]:
        sql = FilterSql(tenant_id, *await self.resolve(tenant_id, device_filter))
        rows = await self.conn.fetch(f"select d.id from devices d where {sql.where} order by d.seq",
                                     *sql.params)
        return [r["id"] for r in rows]

    async def endpoints_taken(self, endpoints: Sequence[str]) -> set[str]:
        """Which endpoints are already registered in any city (names are globally unique)."""
        rows = await self.conn.fetch("select endpoint from fleet_endpoints_taken($1::text[])",
                                     list(endpoints))
        return {r["endpoint"] for r in rows}

    async def serials_taken(self, tenant_id: UUID, serials: Sequence[str]) -> set[str]:
        rows = await self.conn.fetch(
            "select serial from devices where tenant_id = $1 and serial = any($2::text[])",
            tenant_id, list(serials))
        return {r["serial"] for r in rows}
