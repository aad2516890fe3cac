"""Data points, stored values, latest state and time-series answers."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

# One stored value: (tenant_id, device_id, time, path, v_num, v_text, v_bool).
# A plain tuple because ingest moves tens of thousands of these a second.
PointRecord = tuple[UUID, UUID, datetime, str, float | None, str | None, bool | None]
POINT_COLUMNS = ("tenant_id", "device_id", "time", "path", "v_num", "v_text", "v_bool")


def split_value(value: Any) -> tuple[float | None, str | None, bool | None]:
    """Place a typed LwM2M value in the one column that holds its kind."""
    if isinstance(value, bool):
        return None, None, value
    if isinstance(value, int | float):
        return float(value), None, None
    if isinstance(value, str):
        return None, value, None
    if isinstance(value, bytes | bytearray):
        return None, base64.b64encode(value).decode(), None
    if isinstance(value, datetime):
        return value.timestamp(), None, None
    if isinstance(value, tuple) and len(value) == 2:
        # Objlnk (object id, instance id)
        return None, f"{value[0]}:{value[1]}", None
    return None, str(value), None


def stored_value(v_num: float | None, v_text: str | None, v_bool: bool | None) -> Any:
    if v_bool is not None:
        return v_bool
    if v_num is not None:
        return int(v_num) if v_num.is_integer() and abs(v_num) < 2**53 else v_num
    return v_text


@dataclass(frozen=True, slots=True)
class StateValue:
    path: str
    time: datetime
    value: Any
    name: str | None = None
    object_name: str | None = None
    units: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    time: datetime
    value: Any


@dataclass(frozen=True, slots=True)
class SeriesBucket:
    start: datetime
    avg: float | None
    min: float | None
    max: float | None
    count: int


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    device_id: UUID
    path: str
    since: datetime
    until: datetime
    # When set, answer avg/min/max per bucket of this many minutes instead of raw points.
    bucket_minutes: int | None = None
    limit: int = 10_000
