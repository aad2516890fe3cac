"""The planner's pure rules: which bins are due, the times a window leaves, the fixed round's
tour, and where a truck is mid-shift."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time
from uuid import uuid4

from fleet.collection.models import FillForecast, Route, Stop, TimeWindow
from fleet.collection.routing_problem import Place
from fleet.collection.replanning import where_and_load
from fleet.collection.savings import compare, nearest_neighbour_m
from fleet.collection.selection import Bin, allowed, applies, choose, litres, prize, shift_seconds

NOW = datetime(2026, 12, 7, 9, tzinfo=UTC)


def forecast(device_id, fill, hours_to_threshold=None, rate=0.5, emptied_at=None) -> FillForecast:
    # The fill expected when the trucks come (30 h from NOW at `rate`), as the forecast steps it.
    return FillForecast(device_id, "inorganic", "Jung-gu", fill, NOW, fill + rate * 30, NOW, rate,
                        hours_to_threshold, None, None, None, 80.0, emptied_at, "bin")


def a_bin(**kw) -> Bin:
    return Bin(**{"device_id": uuid4(), "lat": 37.5, "lon": 127.0, "district": "Jung-gu",
                  "waste_kind": "inorganic", "capacity_litres": 240, **kw})


def test_due_bins_are_required_nearly_due_optional_and_the_unknown_listed():
    due, soon, full, alarmed, quiet, unknown = (a_bin() for _ in range(6))
    forecasts = {due.device_id: forecast(due.device_id, 60, 20), soon.device_id: forecast(soon.device_id, 40, 50),
                 full.device_id: forecast(full.device_id, 85), alarmed.device_id: forecast(alarmed.device_id, 5),
                 quiet.device_id: forecast(quiet.device_id, 10, 200)}
    chosen, left_out = choose([due, soon, full, alarmed, quiet, unknown], forecasts, {alarmed.device_id},
                              threshold=80, hours_to_next=39, hours_to_spare=63)
    by_bin = {c.bin.device_id: c for c in chosen}
    assert by_bin[due.device_id].required and by_bin[full.device_id].required
    assert by_bin[alarmed.device_id].why == "alarm" and not by_bin[soon.device_id].required
    assert quiet.device_id not in by_bin
    assert left_out == [(unknown.device_id, "no_fill_reading", "no fill reading yet; left to a crew")]
    # Litres at the expected fill when the trucks come, capped at the bin's capacity.
    assert by_bin[due.device_id].fill == 75 and litres(by_bin[due.device_id]) == 180
    assert by_bin[full.device_id].fill == 100 and litres(by_bin[full.device_id]) == 240
    assert prize(by_bin[soon.device_id], 1.0, 30.0, 90) == 2   # 55 % of a 2 km + 90 s detour


def test_a_bin_emptied_since_its_last_reading_is_not_due_again():
    # A crew emptied it an hour after it read 85 %; it has not reported since.
    emptied = a_bin()
    forecasts = {emptied.device_id: forecast(emptied.device_id, 85, 0.0, rate=0.1,
                                             emptied_at=NOW.replace(hour=10))}
    forecasts[emptied.device_id] = replace(forecasts[emptied.device_id], hours_to_threshold=300.0,
                                           fill_until=3.0)
    chosen, left_out = choose([emptied], forecasts, set(), threshold=80, hours_to_next=39, hours_to_spare=63)
    assert chosen == [] and left_out == []


def test_an_overflowing_bin_is_planned_at_its_capacity():
    # 660 l reading 124.5 % is still 660 l for the truck: an 800 l truck can take it.
    big = a_bin(capacity_litres=660)
    chosen, _ = choose([big], {big.device_id: forecast(big.device_id, 124.5)}, {big.device_id},
                       threshold=80, hours_to_next=39, hours_to_spare=63)
    assert [(c.required, c.why, litres(c)) for c in chosen] == [(True, "alarm", 660)]


def test_time_windows_leave_the_rest_of_the_shift():
    assert allowed([(8 * 3600, 9 * 3600)], 6 * 3600, 14 * 3600, 90) == ((21600, 28710), (32400, 50400))
    assert allowed([(5 * 3600, 15 * 3600)], 6 * 3600, 14 * 3600) == ()
    window = TimeWindow(uuid4(), "school", time(8), time(9), (1, 2, 3, 4, 5), None, 37.5, 127.0, 300.0, (),
                        NOW)
    near, far = a_bin(lat=37.501), a_bin(lat=37.51)
    monday, sunday = date(2026, 12, 7), date(2026, 12, 13)
    assert applies(window, monday, near) and not applies(window, monday, far)
    assert not applies(window, sunday, near)


def test_the_fixed_round_unloads_when_the_next_bin_would_not_fit():
    # Points on a line: depot 0, site 1 at 10 m, bins at 20, 30 and 40 m.
    at = [0, 10, 20, 30, 40]
    distance = [[abs(a - b) for b in at] for a in at]
    assert nearest_neighbour_m(distance, 0, [], [2, 3, 4], [100, 100, 100], 150) == 80
    # 100 + 100 > 150: to the site after the first bin, and at the end.
    assert nearest_neighbour_m(distance, 0, [1], [2, 3, 4], [100, 100, 100], 150) == 20 + 10 + 20 + 10 + 30 + 10 + 30 + 10
    assert compare(bins=10, round_days=2, round_m=12000, stops=3, plan_m=2500) == {
        "fixed_round_stops": 5.0, "fixed_round_km": 6.0, "stops_saved": 2.0, "km_saved": 3.5}


def test_a_truck_mid_shift_is_at_its_last_done_stop_with_what_it_emptied_since_unloading():
    route_id = uuid4()

    def stop(seq, kind, load_after, status):
        device, site = (uuid4(), None) if kind == "bin" else (None, uuid4())
        return Stop(uuid4(), route_id, seq, kind, device, site, 37.5 + seq / 1000, 127.0, NOW, load_after, None,
                    True, status, "blocked" if status == "skipped" else None)

    stops = (stop(0, "bin", 100, "done"), stop(1, "disposal", 0, "done"), stop(2, "bin", 50, "done"),
             stop(3, "bin", 120, "skipped"), stop(4, "bin", 200, "done"), stop(5, "bin", 260, "planned"))
    route = Route(route_id, uuid4(), uuid4(), 0, None, "in_progress", NOW, NOW, 0, 0, None, 0, None, None, 1, stops)
    depot = Place("depot", 37.4, 127.0)
    here, load = where_and_load(route, depot)
    assert (here.lat, load) == (stops[4].lat, 50 + 80)   # the skipped bin's 70 litres are not on board
    fresh = Route(route_id, uuid4(), uuid4(), 0, None, "assigned", NOW, NOW, 0, 0, None, 0, None, None, 1,
                  (stop(0, "bin", 100, "planned"),))
    assert where_and_load(fresh, depot) == (depot, 0)


def test_a_shift_ending_before_it_starts_is_a_night_round():
    assert shift_seconds(time(6), time(14)) == (6 * 3600, 14 * 3600)
    assert shift_seconds(time(22), time(6)) == (22 * 3600, 30 * 3600)
