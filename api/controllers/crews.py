"""/api/v1/crews: the teams in the street."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from litestar import Controller, get, post
from msgspec import Meta, Struct

from api.problems import problems
from fleet.access.models import Principal
from fleet.crews.models import Crew as CrewModel
from fleet.crews.service import CrewService


class Crew(Struct):
    id: UUID
    name: str
    created_at: datetime


class CrewCreate(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]


def crew_out(crew: CrewModel) -> Crew:
    return Crew(crew.id, crew.name, crew.created_at)


class CrewController(Controller):
    path = "/api/v1/crews"
    tags = ["work orders"]

    @post("/", summary="Create a crew; crew keys are then issued for it", responses=problems(403, 409, 422))
    async def create(self, data: CrewCreate, principal: Principal, crew_service: CrewService) -> Crew:
        return crew_out(await crew_service.create(principal, data.name))

    @get("/", summary="The city's crews by name", responses=problems(403))
    async def list_crews(self, principal: Principal, crew_service: CrewService) -> list[Crew]:
        return [crew_out(c) for c in await crew_service.list(principal)]

    @get("/{crew_id:uuid}", summary="One crew", responses=problems(403))
    async def get_crew(self, crew_id: UUID, principal: Principal, crew_service: CrewService) -> Crew:
        return crew_out(await crew_service.get(principal, crew_id))
