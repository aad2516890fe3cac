"""Device filters from query strings or saved JSON, and back to JSON for groups and commands."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from fleet.errors import FieldError, ValidationFailed
from fleet.registry.models import BoundingBox, Circle, DeviceFilter, DeviceKind, DeviceStatus

DEFAULT_RADIUS_M = 500.0
MAX_RADIUS_M = 50_000.0
FILTER_FIELDS = ("kind", "status", "district", "tag", "firmware", "bbox", "near", "radius_m", "group_id")


def _floats(value: Any, count: int, name: str) -> list[float]:
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, list | tuple) or len(parts) != count:
        raise ValueError(f"{name} needs {count} comma-separated numbers")
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"{name} needs {count} comma-separated numbers") from None
    if not all(math.isfinite(n) for n in numbers):
        raise ValueError("numbers must be finite")
    return numbers


def _check_point(lat: float, lon: float) -> None:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("latitude must be within ±90 and longitude within ±180")


def parse_filter(raw: Mapping[str, Any], *, allow_group: bool = True) -> DeviceFilter:
    """Build a filter from query parameters or a saved filter; raises naming each bad field."""
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    unknown = [k for k in raw if k not in FILTER_FIELDS or (k == "group_id" and not allow_group)]
    errors += [FieldError(k, "is not a filter field") for k in unknown]

    def parse(name: str, fn) -> None:
        value = raw.get(name)
        if value is None or value == "":
            return
        try:
            values[name] = fn(value)
        except ValueError as exc:
            errors.append(FieldError(name, str(exc)))

    def short_text(value: Any) -> str:
        if not isinstance(value, str) or len(value) > 300:
            raise ValueError("must be a string of at most 300 characters")
        if any(ord(c) < 32 for c in value):
            raise ValueError("must not contain control characters")
        return value

    def enum_of(enum_type):
        def fn(value: Any):
            try:
                return enum_type(value)
            except ValueError:
                raise ValueError("must be one of: " + ", ".join(m.value for m in enum_type)) from None
        return fn

    def bbox(value: Any) -> BoundingBox:
        min_lon, min_lat, max_lon, max_lat = _floats(value, 4, "bbox (min_lon,min_lat,max_lon,max_lat)")
        _check_point(min_lat, min_lon)
        _check_point(max_lat, max_lon)
        if min_lon > max_lon or min_lat > max_lat:
            raise ValueError("bbox minimum must not exceed its maximum")
        return BoundingBox(min_lon, min_lat, max_lon, max_lat)

    def near(value: Any) -> tuple[float, float]:
        if isinstance(value, Mapping):
            value = [value.get("lat"), value.get("lon")]
        lat, lon = _floats(value, 2, "near (lat,lon)")
        _check_point(lat, lon)
        return lat, lon

    def radius(value: Any) -> float:
        r = float(value)
        if not (math.isfinite(r) and 0 < r <= MAX_RADIUS_M):
            raise ValueError(f"must be between 0 and {MAX_RADIUS_M:g} metres")
        return r

    def group(value: Any) -> UUID:
        try:
            return value if isinstance(value, UUID) else UUID(str(value))
        except ValueError:
            raise ValueError("must be a UUID") from None

    parse("kind", enum_of(DeviceKind))
    parse("status", enum_of(DeviceStatus))
    parse("district", short_text)
    parse("tag", short_text)
    parse("firmware", short_text)
    parse("bbox", bbox)
    parse("near", near)
    saved_radius = raw.get("near", {}).get("radius_m") if isinstance(raw.get("near"), Mapping) else None
    parse("radius_m", radius)
    if saved_radius is not None and "radius_m" not in values:
        try:
            values["radius_m"] = radius(saved_radius)
        except (TypeError, ValueError) as exc:
            errors.append(FieldError("near", f"radius_m {exc}"))
    if allow_group:
        parse("group_id", group)
    if "radius_m" in values and "near" not in values:
        errors.append(FieldError("radius_m", "needs near=lat,lon"))
    if errors:
        raise ValidationFailed("invalid device filter", errors)
    circle = None
    if "near" in values:
        lat, lon = values.pop("near")
        circle = Circle(lat, lon, values.pop("radius_m", DEFAULT_RADIUS_M))
    return DeviceFilter(near=circle, **values)


def filter_to_json(device_filter: DeviceFilter) -> dict[str, Any]:
    """The saved form of a filter (what a dynamic group stores)."""
    out: dict[str, Any] = {}
    for name in ("kind", "status", "district", "tag", "firmware"):
        value = getattr(device_filter, name)
        if value is not None:
            out[name] = value.value if hasattr(value, "value") else value
    if device_filter.bbox is not None:
        b = device_filter.bbox
        out["bbox"] = [b.min_lon, b.min_lat, b.max_lon, b.max_lat]
    if device_filter.near is not None:
        c = device_filter.near
        out["near"] = {"lat": c.lat, "lon": c.lon, "radius_m": c.radius_m}
    if device_filter.group_id is not None:
        out["group_id"] = str(device_filter.group_id)
    return out
