"""A crew as the city names it, where it is based and where its tablet last said it was."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from uuid import UUID

from msgspec import UNSET, Meta, Struct, UnsetType

Latitude = Annotated[float, Meta(ge=-90, le=90, description="WGS84 latitude in degrees")]
Longitude = Annotated[float, Meta(ge=-180, le=180, description="WGS84 longitude in degrees")]
CrewName = Annotated[str, Meta(min_length=1, max_length=200)]


class Place(Struct, forbid_unknown_fields=True, frozen=True):
    lat: Latitude
    lon: Longitude


class CrewPosition(Struct, frozen=True):
    """The last position a crew's tablet reported and when it was taken."""

    lat: float
    lon: float
    at: datetime
    accuracy_m: float | None = None


class CrewCreate(Struct, forbid_unknown_fields=True):
    name: CrewName
    home_base: Annotated[Place | None, Meta(description="where the crew starts from; used for nearest-crew "
                                                        "assignment when it has no current position")] = None


class CrewUpdate(Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: CrewName | UnsetType = UNSET
    home_base: Annotated[Place | None, Meta(description="null removes it")] | UnsetType = UNSET


class PositionReport(Struct, forbid_unknown_fields=True):
    """What a crew's tablet reports: where it is, how sure, and (when it sends late) when it was there."""

    lat: Latitude
    lon: Longitude
    accuracy_m: Annotated[float, Meta(ge=0, le=100_000, description="radius of the fix in metres")] | None = None
    at: Annotated[Annotated[datetime, Meta(tz=True)] | None, Meta(description=(
        "when the fix was taken (a tablet sending late); default: now; a time ahead of the server's "
        "counts as now. An older fix never replaces a newer one"))] = None


@dataclass(frozen=True, slots=True)
class Crew:
    id: UUID
    tenant_id: UUID
    name: str
    created_at: datetime
    home_base: Place | None = None
    position: CrewPosition | None = None
