"""/api/v1/routes: the routes crews drive — assign, the tablet's view, marking stops, progress."""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.params import Parameter

from api.problems import problems
from fleet.access.models import Principal
from fleet.collection.driving import RouteService
from fleet.collection.models import RouteAssign, RouteOut, RoutePage, StopUpdate

ETAG = [ResponseHeader(name="ETag", description='the route\'s version, e.g. `"3"`: If-Match may send it back',
                       documentation_only=True)]
IF_MATCH = Annotated[str | None, Parameter(header="If-Match", required=False, description=(
    "optional: the route's version (ETag); a stale one is refused with 412"))]


def _versioned(route: RouteOut) -> Response[RouteOut]:
    return Response(route, headers={"ETag": f'"{route.version}"'})


class RouteController(Controller):
    path = "/api/v1/routes"
    tags = ["collection routes"]

    @get("/", summary="Routes of a day, a plan or a crew, with each one's progress (for the control room)",
         description="Without `plan`, only routes of plans in force (not superseded or failed).",
         responses=problems(403, 422))
    async def list_routes(
        self, principal: Principal, route_service: RouteService,
        date_: Annotated[date | None, Parameter(query="date", description="the plan's date, YYYY-MM-DD")] = None,
        plan: UUID | None = None, crew: UUID | None = None,
        assigned_to: Annotated[str | None, Parameter(description="`me`: the calling crew key's crew",
                                                     pattern="^me$")] = None,
        status: Annotated[list[str] | None, Parameter(description="planned, assigned, in_progress, completed, "
                                                                  "cancelled; repeat for several")] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 1000,
    ) -> RoutePage:
        return await route_service.list(principal, day=date_, plan_id=plan, crew_id=crew, assigned_to=assigned_to,
                                        statuses=status or [], limit=limit)

    @get("/{route_id:uuid}", summary="A route with its stops in driving order (the crew's tablet)",
         response_headers=ETAG, responses=problems(403))
    async def get_route(self, route_id: UUID, principal: Principal, route_service: RouteService) -> Response[RouteOut]:
        return _versioned(await route_service.get(principal, route_id))

    @post("/{route_id:uuid}/assign", summary="Give the route to a crew (`crew_id`), or null to take it back",
          status_code=200, response_headers=ETAG, responses=problems(403, 409, 412, 422))
    async def assign(self, route_id: UUID, data: RouteAssign, principal: Principal, route_service: RouteService,
                     if_match: IF_MATCH = None) -> Response[RouteOut]:
        return _versioned(await route_service.assign(principal, route_id, data.crew_id, if_match))

    @post("/{route_id:uuid}/start", summary="The crew sets off (in_progress); marking the first stop does too",
          status_code=200, response_headers=ETAG, responses=problems(403, 409, 412))
    async def start(self, route_id: UUID, principal: Principal, route_service: RouteService,
                    if_match: IF_MATCH = None) -> Response[RouteOut]:
        return _versioned(await route_service.start(principal, route_id, if_match))

    @post("/{route_id:uuid}/finish", summary="The route is over (completed), whatever stops are left",
          status_code=200, response_headers=ETAG, responses=problems(403, 409, 412))
    async def finish(self, route_id: UUID, principal: Principal, route_service: RouteService,
                     if_match: IF_MATCH = None) -> Response[RouteOut]:
        return _versioned(await route_service.finish(principal, route_id, if_match))

    @post("/{route_id:uuid}/stops/{stop_id:uuid}", summary="Mark a stop done, or skipped with why",
          description="`{\"status\": \"done\"}` or `{\"status\": \"skipped\", \"reason\": \"blocked|not_found|"
                      "damaged\", \"notes\": …}`. A crew marks only stops of its own routes (403). Done is "
                      "once: the same mark again answers 200 with the same route; done to skipped (or back) "
                      "is 409 for a crew and a correction for the control room. A damaged bin opens one "
                      "work order (`work_order_id`). A route whose plan was re-planned (superseded) is "
                      "409, naming the route that replaced it. Answers the route with its stops.",
          status_code=200, response_headers=ETAG, responses=problems(403, 409, 412, 422))
    async def mark(self, route_id: UUID, stop_id: UUID, data: StopUpdate, principal: Principal,
                   route_service: RouteService, if_match: IF_MATCH = None) -> Response[RouteOut]:
        return _versioned(await route_service.mark(principal, route_id, stop_id, data, if_match))
