"""/api/v1/sync: what changed for a crew's tablet since its last token."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import Parameter
from msgspec import Meta, Struct

from api.problems import problems
from api.schemas import Device, device_out
from fleet.access.models import Principal
from fleet.collection.models import RouteOut
from fleet.workorders.models import WorkOrder
from fleet.workorders.sync import AlarmSnapshot, SyncService


class Sync(Struct):
    work_orders: list[WorkOrder]
    devices: list[Device]
    alarms: list[AlarmSnapshot]
    next: Annotated[str, Meta(description="send as `since` next time")]
    more: Annotated[bool, Meta(description="more changes wait: ask again with `next` at once")]
    reset: Annotated[bool, Meta(description="`since` is older than the kept history (or unknown here): this "
                                            "is a full snapshot, drop everything held and keep only this")] = False
    routes: Annotated[list[RouteOut], Meta(description=(
        "collection routes under way (a crew key: its crew's) with their stops; in changes, every route that "
        "changed and is the crew's or was until then (its `crew_id` says whether to keep it)"))] = []


@get("/api/v1/sync", summary="Changes to the crew's work orders (their devices and alarms) and routes since a token",
     description="Without `since`: the open work orders (a crew key: its crew's) with what they refer to. "
                 "Current snapshots, never partial: replace what you hold by id. A `since` older than the "
                 "kept history answers a full snapshot with `reset: true`.",
     tags=["work orders"], responses=problems(403, 422))
async def sync(principal: Principal, sync_service: SyncService,
               since: Annotated[str | None, Parameter(description="the `next` of the previous answer")] = None,
               ) -> Sync:
    batch = await sync_service.since(principal, since)
    return Sync(batch.work_orders, [device_out(d) for d in batch.devices], batch.alarms, batch.next, batch.more,
                batch.reset, batch.routes)
