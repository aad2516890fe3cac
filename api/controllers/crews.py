"""/api/v1/crews: the teams in the street, their home bases and their tablets' positions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from litestar import Controller, get, patch, post, put
from msgspec import Meta, Struct

from api.problems import problems
from fleet.access.models import Principal
from fleet.crews.models import Crew as CrewModel
from fleet.crews.models import CrewCreate, CrewPosition, CrewUpdate, Place, PositionReport
from fleet.crews.service import CrewService


class Crew(Struct):
    id: UUID
    name: str
    created_at: datetime
    home_base: Place | None
    position: Annotated[CrewPosition | None, Meta(description="the last position its tablets reported")]


def crew_out(crew: CrewModel) -> Crew:
    return Crew(crew.id, crew.name, crew.created_at, crew.home_base, crew.position)


class CrewController(Controller):
    path = "/api/v1/crews"
    tags = ["work orders"]

    @post("/", summary="Create a crew; crew keys are then issued for it", responses=problems(403, 409, 422))
    async def create(self, data: CrewCreate, principal: Principal, crew_service: CrewService) -> Crew:
        return crew_out(await crew_service.create(principal, data.name, data.home_base))

    @get("/", summary="The city's crews by name", responses=problems(403))
    async def list_crews(self, principal: Principal, crew_service: CrewService) -> list[Crew]:
        return [crew_out(c) for c in await crew_service.list(principal)]

    @get("/{crew_id:uuid}", summary="One crew", responses=problems(403))
    async def get_crew(self, crew_id: UUID, principal: Principal, crew_service: CrewService) -> Crew:
        return crew_out(await crew_service.get(principal, crew_id))

    @patch("/{crew_id:uuid}", summary="Rename a crew or set its home base (null removes it)",
           responses=problems(403, 409, 422))
    async def update_crew(self, crew_id: UUID, data: CrewUpdate, principal: Principal,
                          crew_service: CrewService) -> Crew:
        return crew_out(await crew_service.update(principal, crew_id, data))

    @put("/me/position", summary="A crew's tablet reports where it is (crew keys only)",
         description="The newest fix is kept with its time; nearest-crew assignment uses it while it is "
                     "fresher than the city's `crew_position_fresh_minutes`, else the home base.",
         responses=problems(403, 422))
    async def report_position(self, data: PositionReport, principal: Principal,
                              crew_service: CrewService) -> Crew:
        return crew_out(await crew_service.report_position(principal, data))
