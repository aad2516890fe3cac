"""Which bins a plan collects, and how: must-collect and may-collect bins from their forecasts and
alarms, the litres each holds, its prize, and the times it may be served. Pure: no I/O.

The rules (docs/collection.md, "Pickup plans"):
- must collect: the forecast says the bin passes the city's threshold before the end of the day
  after the plan's date (the next plan's shift may reach it only that late), or it has an active
  bin_overflow / bin_fire alarm;
- may collect: it passes the threshold within one more day, or it is already above 60 % of the
  threshold; an optional visit whose prize is worth a detour of at most PRIZE_KM km (plus the
  bin's service time) for a full bin, in proportion to its fill, so the solver takes it only on
  the way;
- never: bins under maintenance or decommissioned (the caller leaves them out); bins with no
  position or no fill reading are listed unassigned with why (an alarmed bin is still collected).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from fleet.collection.models import FillForecast, TimeWindow, UnassignedReason
from fleet.workorders.routing import haversine_m

MAY_FRACTION = 0.6       # of the threshold: a bin this full is worth visiting on the way
PRIZE_KM = 2.0           # a full bin is worth a detour this long (plus its service time)
# A bin registered without its capacity is taken for the common two-wheeled 240-litre bin
# (EN 840), rather than planned as holding nothing.
ASSUMED_CAPACITY_LITRES = 240


@dataclass(frozen=True, slots=True)
class Bin:
    device_id: UUID
    lat: float | None
    lon: float | None
    district: str | None
    waste_kind: str
    capacity_litres: int


@dataclass(frozen=True, slots=True)
class Choice:
    bin: Bin
    required: bool
    fill: float                # percent expected when the trucks come (see litres)
    why: str                   # 'threshold', 'alarm', 'may'


def current_fill(forecast: FillForecast | None) -> float | None:
    """The fill now as far as Fleet knows: none once the bin was emptied after its last reading
    (a crew's stop or the "emptied" Execute, before the bin reported again)."""
    if forecast is None or forecast.fill_now is None:
        return None
    emptied, read = forecast.last_emptied_at, forecast.fill_at
    if emptied is not None and read is not None and emptied > read:
        return 0.0
    return forecast.fill_now


def choose(bins: Iterable[Bin], forecasts: dict[UUID, FillForecast], alarmed: set[UUID], *,
           threshold: float, hours_to_next: float, hours_to_spare: float,
           ) -> tuple[list[Choice], list[tuple[UUID, str, str]]]:
    """The bins to plan and those left out with why. `hours_to_next`: from now to the end of the
    day after the plan's date; `hours_to_spare`: a day more. The forecasts' `fill_until` is the
    fill expected when the trucks come (the end of the shift: a truck is never fuller than
    planned), stepped hour by hour from the bin's last reading."""
    chosen: list[Choice] = []
    left_out: list[tuple[UUID, str, str]] = []
    for b in bins:
        forecast = forecasts.get(b.device_id)
        if b.lat is None or b.lon is None:
            left_out.append((b.device_id, UnassignedReason.NO_LOCATION, "the bin has no position"))
            continue
        fill_now = current_fill(forecast)
        if fill_now is None:
            if b.device_id in alarmed:
                chosen.append(Choice(b, True, 100.0, "alarm"))
            else:
                left_out.append((b.device_id, UnassignedReason.NO_FILL_READING,
                                 "no fill reading yet; left to a crew"))
            continue
        expected = forecast.fill_until if forecast.fill_until is not None else fill_now
        fill = min(100.0, max(fill_now, expected))
        to_threshold = forecast.hours_to_threshold
        if fill_now >= threshold:
            to_threshold = 0.0
        if b.device_id in alarmed:
            # An overflowing bin reads above 100 %, but the truck takes no more than the bin
            # holds: else the city's biggest bin, overflowing, would be "too large" for its truck.
            chosen.append(Choice(b, True, fill, "alarm"))
        elif to_threshold is not None and to_threshold <= hours_to_next:
            chosen.append(Choice(b, True, fill, "threshold"))
        elif (to_threshold is not None and to_threshold <= hours_to_spare) or fill_now >= MAY_FRACTION * threshold:
            chosen.append(Choice(b, False, fill, "may"))
    return chosen, left_out


def litres(choice: Choice) -> int:
    return max(1, round((choice.bin.capacity_litres or ASSUMED_CAPACITY_LITRES) * choice.fill / 100))


def prize(choice: Choice, cost_per_km: float, cost_per_hour: float, service_s: int) -> int:
    """What an optional bin is worth, in the solver's currency: a full bin, a detour of PRIZE_KM
    km and its service time; emptier bins less, in proportion (at least 1)."""
    worth = PRIZE_KM * cost_per_km + service_s / 3600 * cost_per_hour
    return max(1, round(worth * choice.fill / 100))


def applies(window: TimeWindow, day: date, b: Bin) -> bool:
    """Whether a window keeps trucks from the bin on that day."""
    if day.isoweekday() not in window.weekdays:
        return False
    if window.device_ids:
        return b.device_id in window.device_ids
    if window.district is not None:
        return b.district == window.district
    if window.lat is not None and window.lon is not None and window.radius_m is not None:
        return b.lat is not None and b.lon is not None and haversine_m(
            (window.lat, window.lon), (b.lat, b.lon)) <= window.radius_m
    return True


def allowed(blocked: Sequence[tuple[int, int]], start_s: int, end_s: int,
            service_s: int = 0) -> tuple[tuple[int, int], ...]:
    """The complement of the blocked windows within [start_s, end_s]: when service may start, so
    that it is over before the next blocked window begins."""
    free: list[tuple[int, int]] = []
    cursor = start_s
    for b_start, b_end in sorted(blocked):
        if b_start - service_s > cursor:
            free.append((cursor, min(b_start - service_s, end_s)))
        cursor = max(cursor, b_end)
        if cursor >= end_s:
            break
    if cursor < end_s:
        free.append((cursor, end_s))
    return tuple((a, b) for a, b in free if a <= b)


def seconds(t) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


DAY_S = 24 * 3600


def shift_seconds(start, end) -> tuple[int, int]:
    """A shift in seconds from the plan day's local midnight; one that ends at or before its
    start ends the next morning (a night round, 22:00-06:00: 79200 to 108000)."""
    start_s, end_s = seconds(start), seconds(end)
    return start_s, end_s if end_s > start_s else end_s + DAY_S


def hours_between(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() / 3600
