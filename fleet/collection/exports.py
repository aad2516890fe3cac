"""A plan for maps and for print: GeoJSON (per route a LineString in driving order, depot to
stops to depot, and its stops as Points) and CSV (one row per stop). Pure: no I/O."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

import msgspec

from fleet.collection.models import Plan

CSV_COLUMNS = ("route_id", "vehicle_id", "vehicle_number", "seq", "kind", "device_id", "disposal_site_id",
               "arrival", "load_after", "expected_fill", "required", "status", "lat", "lon")


def geojson(plan: Plan, depots: Mapping[UUID, tuple[float, float]]) -> bytes:
    """`depots`: each route's vehicle id -> its depot's (lat, lon), where the line starts and ends."""
    features = []
    for route in plan.routes:
        depot = depots.get(route.vehicle_id)
        line = [[s.lon, s.lat] for s in route.stops]
        if depot is not None:
            line = [[depot[1], depot[0]], *line, [depot[1], depot[0]]]
        features.append({"type": "Feature", "geometry": {"type": "LineString", "coordinates": line},
                         "properties": {"kind": "route", "route_id": str(route.id),
                                        "vehicle_id": str(route.vehicle_id), "vehicle_number": route.vehicle_number,
                                        "distance_m": route.distance_m, "duration_s": route.duration_s,
                                        "starts_at": route.starts_at, "ends_at": route.ends_at}})
        for s in route.stops:
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [s.lon, s.lat]},
                             "properties": {"kind": s.kind, "route_id": str(route.id), "stop_id": str(s.id),
                                            "seq": s.seq, "arrival": s.arrival,
                                            "load_after": s.load_after,
                                            "device_id": str(s.device_id) if s.device_id else None,
                                            "disposal_site_id": str(s.disposal_site_id) if s.disposal_site_id
                                            else None, "status": s.status}})
    return msgspec.json.encode({"type": "FeatureCollection", "features": features,
                                "properties": {"plan_id": str(plan.id), "date": plan.date.isoformat()}})


def _utc(at: datetime) -> str:
    # As the JSON answers write times (msgspec): 2026-12-07T21:07:29Z.
    return msgspec.json.encode(at).decode().strip('"')


def csv_text(plan: Plan) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for route in plan.routes:
        for s in route.stops:
            writer.writerow([route.id, route.vehicle_id, route.vehicle_number, s.seq, s.kind, s.device_id or "",
                             s.disposal_site_id or "", _utc(s.arrival), s.load_after,
                             "" if s.expected_fill is None else s.expected_fill, str(s.required).lower(), s.status,
                             s.lat, s.lon])
    return out.getvalue()
