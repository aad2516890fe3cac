"""The demo's waste collection, over the REST contract like a city's own tooling: depots,
disposal sites, trucks for each waste kind the bins hold, a school street, the settings; then,
once the bins have reported, a plan for the day whose routes go to the demo's crew."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from simulators.rest import ApiError, FleetApi

log = structlog.get_logger(__name__)

SETUP = "/api/v1/collection"
DEPOTS = ({"name": "Seongdong depot", "location": {"lat": 37.5509, "lon": 127.0453}},
          {"name": "Mapo depot", "location": {"lat": 37.5573, "lon": 126.9057}})
# Seoul's resource recovery facilities take every kind; the recycling centre only recyclables.
DISPOSAL_SITES = (
    {"name": "Mapo resource recovery facility", "location": {"lat": 37.5707, "lon": 126.8815}},
    {"name": "Gangnam resource recovery facility", "location": {"lat": 37.4937, "lon": 127.0953}},
    {"name": "Dongdaemun recycling centre", "location": {"lat": 37.5823, "lon": 127.0562},
     "waste_kinds": ["plastic", "paper", "glass", "metal"]},
)
# Litres a truck carries, per kind: the organic truck is a small one for narrow streets, so its
# route unloads mid-shift (a reload) on most days.
CAPACITY_LITRES = {"organic": 800, "inorganic": 2500, "plastic": 3000, "paper": 3000, "glass": 2000,
                   "metal": 2000}
OTHER_CAPACITY_LITRES = 2000
# A long day (two crews in turn in a real city), so the demo's truck drives today's routes
# whenever a visitor starts it between morning and evening.
SHIFT = ("06:00", "22:00")
SCHOOL_HOURS = ("08:00", "09:00")
SETTINGS = {"time_limit_s": 10, "plan_at": "18:00"}
PLAN_TIME_LIMIT_S = 10
# Before this local hour the demo plans today (three hours of the shift ahead at least; a plan
# for today starts its trucks now); after, tomorrow.
PLAN_TODAY_BEFORE_HOUR = 19
SETTLE_S = 150.0        # the demo's bins report every minute: two or three readings each by then
DISPATCH_EVERY_S = 600.0
API_WAIT_S = 120.0


@dataclass(frozen=True, slots=True)
class DemoSetup:
    depots: int
    disposal_sites: int
    vehicles: int
    created: int  # of all these, created this run
    school_district: str | None


@dataclass(frozen=True, slots=True)
class DemoPlan:
    plan_id: str | None  # None: the day's plan existed already
    day: date
    routes: int
    bins: int
    unassigned: int
    assigned: int  # routes given to the crew this time
    route_id: str | None  # one route on the crew's tablet
    sets_off: datetime | None = None  # when the first route starts


def vehicle_name(kind: str) -> str:
    return f"{kind.capitalize()} truck"


async def _ensure(api: FleetApi, path: str, wanted: list[dict[str, Any]]) -> tuple[dict[str, dict], int]:
    """Every wanted item of a set-up list by name, creating those missing (a restart finds them)."""
    existing = {item["name"]: item for item in await api.get(f"{SETUP}/{path}")}
    created = 0
    for item in wanted:
        if item["name"] not in existing:
            existing[item["name"]] = await api.post(f"{SETUP}/{path}", item)
            created += 1
    return existing, created


def school_district(bins: list[dict[str, Any]]) -> str | None:
    """The district with the most bins (ties: by name), so its school street matters."""
    counts = Counter(b.get("district") for b in bins if b.get("district"))
    return min(counts, key=lambda d: (-counts[d], d)) if counts else None


async def seed_collection_setup(api: FleetApi) -> DemoSetup:
    bins = [b for b in await api.devices("waste_bin") if b.get("status") != "decommissioned"]
    kinds = sorted({b.get("waste_kind") or (b.get("attributes") or {}).get("waste_kind") for b in bins} - {None})
    depots, created = await _ensure(api, "depots", list(DEPOTS))
    sites, more = await _ensure(api, "disposal-sites", list(DISPOSAL_SITES))
    created += more
    depot_ids = [depots[d["name"]]["id"] for d in DEPOTS]
    vehicles, more = await _ensure(api, "vehicles", [
        {"name": vehicle_name(kind), "waste_kind": kind, "count": 1, "depot_id": depot_ids[n % len(depot_ids)],
         "capacity_litres": CAPACITY_LITRES.get(kind, OTHER_CAPACITY_LITRES),
         "shift_start": SHIFT[0], "shift_end": SHIFT[1]} for n, kind in enumerate(kinds)])
    created += more
    district = school_district(bins)
    if district is not None:
        _, more = await _ensure(api, "time-windows", [
            {"name": f"School streets, {district}", "district": district, "starts": SCHOOL_HOURS[0],
             "ends": SCHOOL_HOURS[1], "weekdays": [1, 2, 3, 4, 5]}])
        created += more
    await api.patch(f"{SETUP}/settings", SETTINGS)
    return DemoSetup(len(depots), len(sites), len(vehicles), created, district)


def plan_day(now: datetime) -> date:
    """Today while most of the shift is ahead, else tomorrow (local dates)."""
    today = now.date()
    return today if now.hour < PLAN_TODAY_BEFORE_HOUR else today + timedelta(days=1)


async def plan_and_assign(api: FleetApi, crew_id: str, day: date, *, make_plan: bool = True,
                          time_limit_s: int = PLAN_TIME_LIMIT_S) -> DemoPlan:
    """The day's plan (made unless routes for the day exist) and every route of it nobody drives
    yet given to the demo's crew: its truck (`fleet simulate --truck-key`) then drives them all."""
    plan_id, unassigned = None, 0
    routes = (await api.get("/api/v1/routes", date=day.isoformat()))["items"]
    if not routes and make_plan:
        plan = await api.post(f"{SETUP}/plans", {"date": day.isoformat(), "time_limit_s": time_limit_s})
        plan_id, unassigned = plan["id"], len(plan.get("unassigned") or [])
        routes = (await api.get("/api/v1/routes", date=day.isoformat(), plan=plan_id))["items"]
    assigned = 0
    for route in routes:
        if route.get("crew_id") is None and route.get("status") == "planned":
            await api.post(f"/api/v1/routes/{route['id']}/assign", {"crew_id": crew_id})
            assigned += 1
    bins = sum((r.get("progress") or {}).get("bins", 0) for r in routes)
    starts = [datetime.fromisoformat(r["starts_at"].replace("Z", "+00:00")) for r in routes if r.get("starts_at")]
    return DemoPlan(plan_id, day, len(routes), bins, unassigned, assigned, routes[0]["id"] if routes else None,
                    min(starts, default=None))


async def wait_for_api(api: FleetApi, timeout_s: float = API_WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await api.city()
            return
        except ApiError as exc:
            if exc.status is not None or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(1.0)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def plan_lines(plan: DemoPlan, zone: ZoneInfo | None = None) -> str:
    """The banner's collection lines; their commands use demo.env's variables, like the banner's."""
    made = f"plan {plan.plan_id}" if plan.plan_id else "the plan in force"
    sets_off = (f", its truck drives from {plan.sets_off.astimezone(zone):%Y-%m-%d %H:%M %Z}"
                if plan.sets_off and zone else "")
    return "\n".join((
        f"  Collection: {made} for {plan.day}: {_count(plan.routes, 'route')}, {_count(plan.bins, 'bin')}, "
        f"{_count(plan.unassigned, 'bin')} left out; every route on the crew's tablet{sets_off}",
        '             curl -H "Authorization: Bearer $CREW_KEY" "$FLEET_URL/api/v1/routes?assigned_to=me"',
        *(('             curl -H "Authorization: Bearer $ADMIN_KEY" '
           f'"$FLEET_URL/api/v1/collection/plans/{plan.plan_id}?format=geojson"',) if plan.plan_id else ())))


async def run_demo_collection(base: str, admin_key: str, crew_id: str, timezone: str, *,
                              settle_s: float = SETTLE_S, every_s: float = DISPATCH_EVERY_S,
                              time_limit_s: int = PLAN_TIME_LIMIT_S, day: date | None = None,
                              out=print) -> None:
    """The demo's collection, beside the API in the same process: set up, wait for the bins'
    readings, plan, then keep giving the crew each day's routes (the evening's scheduled plan
    for tomorrow included). Never ends: a failure is a warning, the rest of the demo runs on."""
    zone = ZoneInfo(timezone)
    async with FleetApi(base, admin_key) as api:
        try:
            await wait_for_api(api)
            setup = await seed_collection_setup(api)
            log.info("demo collection set up", depots=setup.depots, disposal_sites=setup.disposal_sites,
                     vehicles=setup.vehicles, created=setup.created)
            await asyncio.sleep(settle_s)
            plan = await plan_and_assign(api, crew_id, day or plan_day(datetime.now(zone)),
                                         time_limit_s=time_limit_s)
            out(plan_lines(plan, zone), flush=True)
        except ApiError as exc:
            log.warning("demo collection not planned", reason=str(exc))
        while True:
            await asyncio.sleep(every_s)
            today = datetime.now(zone).date()
            for each in (today, today + timedelta(days=1)):
                try:
                    await plan_and_assign(api, crew_id, each, make_plan=False)
                except ApiError as exc:
                    log.warning("demo routes not assigned", day=str(each), reason=str(exc))
