"""A simulated collection truck: it drives the routes Fleet gives its crew (a crew key), stop by
stop at the plan's pace in simulated time, empties each simulated bin it reaches and marks the
stop done over REST, as the crew's tablet would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from simulators.rest import ApiError, FleetApi

log = structlog.get_logger(__name__)

ROUTES = "/api/v1/routes"
POLL_S = 30.0
DRIVING = ("assigned", "in_progress")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Truck:
    """`empty(endpoint)` empties that simulated bin (False: not one of this run's). `speed` is the
    simulation's: a route's hours pass in hours / speed."""

    def __init__(self, api: FleetApi, empty: Callable[[str], bool], *, speed: float = 1.0,
                 poll_s: float = POLL_S, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.api = api
        self.empty = empty
        self.speed = speed
        self.poll_s = poll_s
        self.now = now
        self.driving: dict[str, asyncio.Task] = {}
        self.stops_done = 0

    async def run(self) -> None:
        """Look for routes to drive every poll_s, each driven by a task of its own (a crew may
        have several trucks out)."""
        try:
            while True:
                await self.poll()
                await asyncio.sleep(self.poll_s)
        finally:
            for task in self.driving.values():
                task.cancel()
            for task in self.driving.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def poll(self) -> None:
        try:
            page = await self.api.get(ROUTES, assigned_to="me", status=list(DRIVING))
        except ApiError as exc:
            log.warning("truck cannot list its routes", reason=str(exc))
            return
        listed = {route["id"] for route in page["items"]}
        for route_id, task in self.driving.items():
            if route_id not in listed and not task.done():
                # Handed back or to another crew, or replaced by a re-plan (whose route is listed).
                task.cancel()
        for route in page["items"]:
            task = self.driving.get(route["id"])
            if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
                self.driving[route["id"]] = asyncio.create_task(self.drive(route["id"]),
                                                                name=f"truck-{route['id']}")

    async def drive(self, route_id: str) -> None:
        """From the route's start to its last stop at the plan's pace, then finish it."""
        route = await self.api.get(f"{ROUTES}/{route_id}")
        previous = _time(route["starts_at"])
        await self.sleep((previous - self.now()).total_seconds())
        for stop in sorted(route.get("stops") or [], key=lambda s: s["seq"]):
            arrival = _time(stop["arrival"])
            if stop["status"] != "planned":
                previous = max(previous, arrival)
                continue
            await self.sleep((arrival - previous).total_seconds())
            previous = max(previous, arrival)
            try:
                await self.reach(route_id, stop)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                # Re-planned (or cancelled) under way: the next poll finds the route in force.
                log.info("truck's route changed under it", route=route_id, reason=str(exc))
                return
        with contextlib.suppress(ApiError):  # the last stop may have completed it already
            await self.api.post(f"{ROUTES}/{route_id}/finish")
        log.info("truck finished its route", route=route_id)

    async def reach(self, route_id: str, stop: dict[str, Any]) -> None:
        """At the stop: the bin is emptied (its sensor sees the drop), then the tablet says done."""
        device = stop.get("device") or {}
        if stop.get("kind") == "bin" and device.get("endpoint") and not self.empty(device["endpoint"]):
            log.debug("truck at a bin this run does not simulate", endpoint=device["endpoint"])
        try:
            await self.api.post(f"{ROUTES}/{route_id}/stops/{stop['id']}", {"status": "done"})
        except ApiError as exc:
            if exc.status != 409:
                raise
            # The crew's tablet skipped it meanwhile (or the control room corrected it): as it is.
            log.debug("stop dealt with already", route=route_id, stop=stop["id"], reason=str(exc))
            return
        self.stops_done += 1

    async def sleep(self, planned_s: float) -> None:
        if planned_s > 0:
            await asyncio.sleep(planned_s / self.speed)
