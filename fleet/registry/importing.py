"""Reading device rows out of CSV and GeoJSON documents, and writing them back out."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

import msgspec

from fleet.errors import FieldError, ValidationFailed
from fleet.registry.models import ALL_KIND_ATTRIBUTES, Device
from fleet.security.validation import SECURITY_COLUMNS

MAX_IMPORT_ROWS = 50_000

EXPORT_COLUMNS = ("id", "kind", "endpoint", "serial", "manufacturer", "model", "firmware_version",
                  "lat", "lon", "district", "address", "installed_at", "status", "tags",
                  *ALL_KIND_ATTRIBUTES, *SECURITY_COLUMNS)
# Every column an export writes is accepted back; `id` is then dropped, since an import
# creates new devices (possibly in another city) whatever ids the file names.
_ACCEPTED = frozenset(EXPORT_COLUMNS)
_IGNORED = frozenset({"id"})


def _too_many() -> ValidationFailed:
    return ValidationFailed(f"at most {MAX_IMPORT_ROWS} rows per import",
                            [FieldError("body", f"more than {MAX_IMPORT_ROWS} rows")])


def rows_from_csv(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(row number, fields) for every data row; the header is row 1, like a spreadsheet shows it."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ValidationFailed("empty CSV", [FieldError("body", "no header row")]) from None
    except csv.Error as exc:
        raise ValidationFailed("malformed CSV", [FieldError("body", str(exc), 1)]) from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    unknown = [h for h in header if h not in _ACCEPTED]
    duplicated = {h for h in header if header.count(h) > 1}
    errors = [FieldError(h, "unknown column", 1) for h in unknown]
    errors += [FieldError(h, "column appears more than once", 1) for h in sorted(duplicated)]
    if errors:
        raise ValidationFailed("invalid CSV header", errors)
    rows = []
    line = 1
    try:
        # Counting records, not physical lines: a quoted cell may span lines yet is one row.
        for line, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise ValidationFailed("malformed CSV", [FieldError(
                    "body", f"expected {len(header)} values, found {len(values)}", line)])
            rows.append((line, {h: _restore(v) for h, v in zip(header, values, strict=True)
                                if h not in _IGNORED}))
            if len(rows) > MAX_IMPORT_ROWS:
                raise _too_many()
    except csv.Error as exc:
        raise ValidationFailed("malformed CSV", [FieldError("body", str(exc), line + 1)]) from None
    return rows


def rows_from_geojson(body: bytes) -> list[tuple[int, dict[str, Any]]]:
    """(feature number from 1, fields) for every Point feature of a FeatureCollection."""
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ValidationFailed("malformed GeoJSON", [FieldError("body", str(exc))]) from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(
            doc.get("features"), list):
        raise ValidationFailed("malformed GeoJSON", [FieldError("body", "expected a FeatureCollection")])
    if len(doc["features"]) > MAX_IMPORT_ROWS:
        raise _too_many()
    rows, errors = [], []
    for number, feature in enumerate(doc["features"], start=1):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        properties = feature.get("properties") if isinstance(feature, dict) else None
        coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
        if not isinstance(geometry, dict) or geometry.get("type") != "Point" or not isinstance(
                coords, list) or len(coords) < 2:
            errors.append(FieldError("geometry", "must be a Point with [lon, lat]", number))
            continue
        # RFC 7946 §3.1.1: positions are numbers; "126.97" is a string, and so is refused
        # (the device validation that follows would read it as a CSV cell).
        not_numbers = [FieldError(name, "must be a number", number)
                       for name, value in (("lon", coords[0]), ("lat", coords[1]))
                       if type(value) not in (int, float)]
        if not_numbers:
            errors += not_numbers
            continue
        if not isinstance(properties, dict):
            errors.append(FieldError("properties", "must be an object", number))
            continue
        unknown = [k for k in properties if k not in _ACCEPTED or k in ("lat", "lon")]
        errors += [FieldError(k, "unknown property", number) for k in unknown]
        fields = {k: v for k, v in properties.items() if k not in _IGNORED}
        rows.append((number, {**fields, "lon": coords[0], "lat": coords[1]}))
    if errors:
        raise ValidationFailed("invalid GeoJSON", errors)
    return rows


def _cell(device: Device, column: str, security: dict[str, str] | None = None) -> Any:
    if column in SECURITY_COLUMNS:
        return (security or {}).get(column)
    if column in ("lat", "lon"):
        return getattr(device.location, column)
    if column in ALL_KIND_ATTRIBUTES:
        return device.attributes.get(column)
    value = getattr(device, column)
    if column == "tags":
        return ";".join(value)
    return value.isoformat() if hasattr(value, "isoformat") else value


# Cells a spreadsheet would run as a formula (CSV injection); exported with a leading quote,
# which import strips again so a round trip is exact.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _defuse(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _restore(value: str) -> str:
    if value.startswith("'") and value[1:].startswith(_FORMULA_STARTS):
        return value[1:]
    return value


def _csv_line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else _defuse(v) for v in values])
    return buffer.getvalue()


def csv_header() -> str:
    return _csv_line(EXPORT_COLUMNS)


def csv_line(device: Device, security: dict[str, str] | None = None) -> str:
    """`security`: the device's credential cells (fleet.security: never a key)."""
    return _csv_line(_cell(device, c, security) for c in EXPORT_COLUMNS)


def geojson_feature(device: Device) -> dict[str, Any]:
    properties = {c: _cell(device, c) for c in EXPORT_COLUMNS if c not in ("lat", "lon", "tags")}
    properties["tags"] = device.tags
    return {"type": "Feature", "id": str(device.id),
            "geometry": {"type": "Point", "coordinates": [device.location.lon, device.location.lat]},
            "properties": {k: v for k, v in properties.items() if v is not None}}
