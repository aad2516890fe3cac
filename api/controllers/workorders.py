"""/api/v1/workorders: work orders over REST, with If-Match versions, photos and the crew's day."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Request, Response, get, patch, post, put
from litestar.datastructures import ResponseHeader
from litestar.params import Parameter

from api.openapi import ImageDownloadOperation, ImageUploadOperation
from api.problems import problems
from fleet.access.models import Principal
from fleet.workorders.models import (Attachment, WorkOrder, WorkOrderCreate, WorkOrderPage, WorkOrderRules,
                                     WorkOrderUpdate)
from fleet.workorders.service import WorkOrderService

Q = Annotated[str | None, Parameter(required=False)]
ETAG = [ResponseHeader(name="ETag", description='the version, e.g. `"3"`: send it back in If-Match',
                       documentation_only=True)]


def _versioned(order: WorkOrder, status_code: int = 200) -> Response[WorkOrder]:
    return Response(order, status_code=status_code, headers={"ETag": f'"{order.version}"'})


class WorkOrderController(Controller):
    path = "/api/v1/workorders"
    tags = ["work orders"]

    @post("/", summary="Open a work order on devices (location: their centroid, unless given)",
          responses=problems(403, 409, 422), response_headers=ETAG)
    async def create(self, data: WorkOrderCreate, principal: Principal,
                     workorder_service: WorkOrderService) -> Response[WorkOrder]:
        return _versioned(await workorder_service.create(principal, data), 201)

    @get("/", summary="Work orders, filtered; with `near` sorted by distance (whole metres)",
         responses=problems(403, 422))
    async def list_orders(
        self, principal: Principal, workorder_service: WorkOrderService,
        status: Annotated[list[str] | None, Parameter(description="repeat, or a comma list")] = None,
        crew: UUID | None = None, device: UUID | None = None,
        near: Annotated[str | None, Parameter(description="lat,lon: nearest first, with distance_m")] = None,
        assigned_to: Annotated[str | None, Parameter(description="`me`: the calling crew key's crew",
                                                     pattern="^me$")] = None,
        cursor: Q = None, limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> WorkOrderPage:
        return await workorder_service.list(principal, statuses=status or [], crew_id=crew, device_id=device,
                                            near=near, assigned_to=assigned_to, cursor=cursor, limit=limit)

    @get("/my-day", summary="The crew's open work orders in driving order; distance_m is each leg",
         responses=problems(403, 422))
    async def my_day(self, principal: Principal, workorder_service: WorkOrderService,
                     start: Annotated[str | None, Parameter(description="lat,lon where the crew starts")] = None,
                     crew: Annotated[UUID | None, Parameter(description="operators: whose day")] = None,
                     ) -> list[WorkOrder]:
        return await workorder_service.my_day(principal, start, crew)

    @get("/rules", summary="The city's work-order rules: from alarms, deadlines, reopen window",
         responses=problems(403))
    async def rules(self, principal: Principal, workorder_service: WorkOrderService) -> WorkOrderRules:
        return await workorder_service.rules(principal)

    @put("/rules", summary="Replace the city's work-order rules", responses=problems(403, 422))
    async def put_rules(self, data: WorkOrderRules, principal: Principal,
                        workorder_service: WorkOrderService) -> WorkOrderRules:
        return await workorder_service.put_rules(principal, data)

    @get("/{work_order_id:uuid}", summary="One work order; its ETag is its version", response_headers=ETAG)
    async def get_order(self, work_order_id: UUID, principal: Principal,
                        workorder_service: WorkOrderService) -> Response[WorkOrder]:
        return _versioned(await workorder_service.get(principal, work_order_id))

    @patch("/{work_order_id:uuid}", summary="Change a work order: If-Match with its version is required",
           description="412 (with `current_version` and the ETag) when the version is stale; 428 without "
                       "If-Match; 409 for a status it cannot go to from where it is.",
           responses=problems(403, 409, 412, 422, 428), response_headers=ETAG)
    async def update(self, work_order_id: UUID, data: WorkOrderUpdate, principal: Principal,
                     workorder_service: WorkOrderService,
                     if_match: Annotated[str | None, Parameter(header="If-Match", required=False)] = None,
                     ) -> Response[WorkOrder]:
        return _versioned(await workorder_service.update(principal, work_order_id, data, if_match))

    @post("/{work_order_id:uuid}/attachments", summary="Add a photo (JPEG, PNG or WebP, at most 5 MiB)",
          responses=problems(400, 403, 413, 415), operation_class=ImageUploadOperation)
    async def add_attachment(self, work_order_id: UUID, request: Request, principal: Principal,
                             workorder_service: WorkOrderService) -> Attachment:
        return await workorder_service.add_attachment(principal, work_order_id, await request.body())

    @get("/{work_order_id:uuid}/attachments", summary="The work order's photos", responses=problems(403))
    async def list_attachments(self, work_order_id: UUID, principal: Principal,
                               workorder_service: WorkOrderService) -> list[Attachment]:
        return await workorder_service.attachments(principal, work_order_id)

    @get("/{work_order_id:uuid}/attachments/{attachment_id:uuid}", summary="One photo, as stored",
         responses=problems(403), media_type="application/octet-stream", operation_class=ImageDownloadOperation)
    async def get_attachment(self, work_order_id: UUID, attachment_id: UUID, principal: Principal,
                             workorder_service: WorkOrderService) -> Response[bytes]:
        media_type, content = await workorder_service.attachment(principal, work_order_id, attachment_id)
        return Response(content, media_type=media_type,
                        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})
