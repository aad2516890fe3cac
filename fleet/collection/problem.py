"""The routing problem a pickup plan solves, read of the city in one transaction: its settings,
trucks, depots, disposal sites and time windows, the bins chosen (fleet.collection.selection) per
waste kind as the solver takes them, and the bins left out before solving, with why."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from fleet.collection import selection
from fleet.collection.forecasting import forecasts
from fleet.collection.models import CollectionSettings, DisposalSite, TimeWindow, UnassignedReason, Vehicle
from fleet.collection.routing_problem import Fleet, Place, RoutingProblem, Visit
from fleet.collection.plans_repository import PlanRepository
from fleet.collection.repository import SetupRepository


@dataclass
class Kind:
    """One waste kind's problem: its trucks, the bins chosen and the bins of the fixed round."""

    waste_kind: str
    vehicles: list[Vehicle]
    problem: RoutingProblem
    choices: list[selection.Choice]       # in the problem's visit order
    round_bins: list[tuple[selection.Bin, int]]   # every bin of the kind with its litres


@dataclass
class Setting:
    """What planning read of the city, in one transaction."""

    settings: CollectionSettings
    zone: ZoneInfo
    midnight: datetime
    kinds: list[Kind]
    left_out: list[tuple[UUID, str, str | None]]
    must: int
    may: int


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)


def at(midnight: datetime, seconds: int) -> datetime:
    # Wall-clock seconds from the day's local midnight (a DST change that day shifts by an hour).
    return (midnight + timedelta(seconds=seconds)).astimezone(UTC)


def wall_seconds(now: datetime, midnight: datetime) -> int:
    """Seconds from the plan's local midnight to `now` on the wall clock, the solver's time axis
    (problem.at): on a day the clocks change, elapsed seconds would put the trucks an hour off."""
    local = now.astimezone(midnight.tzinfo)
    return round((local.replace(tzinfo=None) - midnight.replace(tzinfo=None)).total_seconds())


def fleets_of(vehicles: list[Vehicle], depots: dict, sites: list[DisposalSite], now_s: int) -> tuple[Fleet, ...]:
    """`now_s`: now in seconds from the plan's local midnight. A plan for today starts its trucks
    now at the earliest (none before a shift start, none after its end): routes never begin in
    the past."""
    out = []
    for v in vehicles:
        depot = depots[v.depot_id]
        start_s, end_s = selection.shift_seconds(v.shift_start, v.shift_end)
        out.append(Fleet(
            key=str(v.id), depot=Place(str(depot.id), depot.lat, depot.lon), capacity_litres=v.capacity_litres,
            count=v.count, shift_start_s=min(max(start_s, now_s), end_s), shift_end_s=end_s,
            cost_per_km=v.cost_per_km, cost_per_hour=v.cost_per_hour,
            disposal_sites=tuple(Place(str(s.id), s.lat, s.lon) for s in sites if s.takes(v.waste_kind))))
    return tuple(out)


def visit_of(choice: selection.Choice, fleets: tuple[Fleet, ...], windows: list[TimeWindow], day: date,
             service_s: int) -> Visit | None:
    """The bin as the solver takes it; None when its time windows leave no time in any shift."""
    start = min(f.shift_start_s for f in fleets)
    end = max(f.shift_end_s for f in fleets)
    # The day's windows, and the next morning's for a night round that runs past midnight.
    blocked = [(selection.seconds(w.starts) + offset, selection.seconds(w.ends) + offset)
               for offset, on in ((0, day), (selection.DAY_S, day + timedelta(days=1))) if offset < end
               for w in windows if selection.applies(w, on, choice.bin)]
    allowed = selection.allowed(blocked, start, end, service_s) if blocked else ()
    if blocked and not allowed:
        return None
    cheapest = min(fleets, key=lambda f: f.cost_per_km)
    return Visit(Place(str(choice.bin.device_id), choice.bin.lat, choice.bin.lon), selection.litres(choice),
                 service_s, required=choice.required,
                 prize=0 if choice.required else selection.prize(choice, cheapest.cost_per_km,
                                                                 cheapest.cost_per_hour, service_s),
                 allowed=allowed)


async def read_setting(conn, tenant_id: UUID, day: date, waste_kind: str | None, *, now: datetime,
                       exclude: frozenset[UUID] = frozenset(),
                       keep: dict[UUID, tuple[bool, float]] | None = None) -> Setting:
    """Everything the plan needs, read on the city's side of the wall. A re-plan passes
    `exclude` (bins its done and skipped stops dealt with) and `keep` (its remaining stops: bin
    -> required, expected fill): those are planned whatever the forecast says now, and besides
    them only must-collect bins."""
    setup, plans = SetupRepository(conn), PlanRepository(conn)
    settings = await setup.settings(tenant_id)
    zone = ZoneInfo(await plans.timezone(tenant_id))
    midnight = local_midnight(day, zone)
    vehicles = await setup.vehicles(tenant_id, waste_kind)
    depots = {d.id: d for d in await setup.depots(tenant_id)}
    sites = await setup.sites(tenant_id)
    windows = await setup.windows(tenant_id)
    by_kind: dict[str, list[Vehicle]] = {}
    for v in vehicles:
        by_kind.setdefault(v.waste_kind, []).append(v)
    # Bins of a kind no truck collects are still looked at: an urgent one is listed, not dropped.
    kinds = [waste_kind] if waste_kind else sorted({*by_kind, *await plans.bin_kinds(tenant_id)})
    bins = [b for b in await plans.bins(tenant_id, kinds) if b.device_id not in exclude]
    alarmed = await plans.alarmed(tenant_id)
    next_collection = local_midnight(day + timedelta(days=2), zone)   # the end of the day after
    # Fills expected when the trucks come: the end of the day's last shift.
    service_end = max((at(midnight, selection.shift_seconds(v.shift_start, v.shift_end)[1]) for v in vehicles),
                      default=midnight + timedelta(hours=24))
    fills = {f.device_id: f for f in await forecasts(
        conn, tenant_id, until=max(service_end, now), waste_kind=waste_kind, now=now,
        horizon=next_collection + timedelta(days=1))}
    left_out: list[tuple[UUID, str, str | None]] = []
    out: list[Kind] = []
    must = may = 0
    for kind in kinds:
        kind_bins = [b for b in bins if b.waste_kind == kind]
        kind_vehicles = by_kind.get(kind, [])
        chosen, missing = selection.choose(
            kind_bins, fills, alarmed, threshold=settings.threshold_percent,
            hours_to_next=selection.hours_between(now, next_collection),
            hours_to_spare=selection.hours_between(now, next_collection + timedelta(days=1)))
        if keep is not None:
            chosen = _with_remaining(chosen, kind_bins, keep)
        left_out += missing
        must += sum(c.required for c in chosen)
        may += sum(not c.required for c in chosen)
        if not kind_vehicles:
            left_out += [(c.bin.device_id, UnassignedReason.NO_VEHICLE, f"no vehicle collects {kind}")
                         for c in chosen if c.required]
            continue
        fleets = fleets_of(kind_vehicles, depots, sites, wall_seconds(now, midnight))
        visits, kept = [], []
        for c in chosen:
            visit = visit_of(c, fleets, windows, day, settings.service_s)
            if visit is None:
                if c.required:
                    left_out.append((c.bin.device_id, UnassignedReason.OUTSIDE_SHIFT,
                                     "its time windows leave no time in any shift"))
                continue
            visits.append(visit)
            kept.append(c)
        litres = {c.bin.device_id: selection.litres(c) for c in chosen}
        round_bins = [(b, litres.get(b.device_id) or _round_litres(b, fills.get(b.device_id)))
                      for b in kind_bins if b.lat is not None and b.lon is not None]
        out.append(Kind(kind, kind_vehicles, RoutingProblem(fleets, tuple(visits), settings.unload_s), kept,
                        round_bins))
    return Setting(settings, zone, midnight, out, left_out, must, may)


def _with_remaining(chosen: list[selection.Choice], bins: list[selection.Bin],
                    keep: dict[UUID, tuple[bool, float]]) -> list[selection.Choice]:
    """A re-plan's choice: its remaining stops (required as they were, or more so now) and new
    must-collect bins; no new optional ones."""
    out, seen = [], set()
    for c in chosen:
        if c.bin.device_id in keep:
            required, _ = keep[c.bin.device_id]
            out.append(dataclasses.replace(c, required=c.required or required))
        elif c.required:
            out.append(c)
        seen.add(c.bin.device_id)
    for b in bins:
        if b.device_id in keep and b.device_id not in seen and b.lat is not None and b.lon is not None:
            required, fill = keep[b.device_id]
            out.append(selection.Choice(b, required, fill, "remaining"))
    return out


def _round_litres(b: selection.Bin, forecast) -> int:
    """A fixed round empties a bin whatever its fill: what it holds now, half full if unknown."""
    fill = selection.current_fill(forecast)
    return selection.litres(selection.Choice(b, False, 50.0 if fill is None else fill, "round"))
