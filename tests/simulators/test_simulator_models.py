"""The simulator's parts on their own: CoAP codec, daily curves, random streams, fault plans,
inventory planning, object trees and the physical models (no network, no database)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from fleet.objectmodel import Reading, ResourcePath
from protocols.lwm2m import linkformat, senml
from simulators import inventory
from simulators.clock import HOUR_S, DailyCurve, SimClock
from simulators.devices import AccessPoint, Streetlight, WasteBin, World
from simulators.environment import Environment
from simulators.faults import DeviceFaults, FaultPlan
from simulators.inventory import DeviceSpec
from simulators.noise import Noise
from simulators.objects import BadRequest, MethodNotAllowed, NotFound
from simulators.scheduler import Scheduler
from simulators.stats import Stats

SEOUL = ZoneInfo("Asia/Seoul")


def test_daily_curve_integral_matches_a_fine_sum():
    curve = DailyCurve([1 + (h % 7) for h in range(24)])
    assert curve.mean == pytest.approx(1.0)
    assert curve.integral(0, 24) == pytest.approx(24.0)
    assert curve.integral(10, 58) == pytest.approx(48.0)  # two whole days from any start
    steps = 6000
    fine = sum(curve.value(5.3 + (i + 0.5) * 7.9 / steps) for i in range(steps)) * 7.9 / steps
    assert curve.integral(5.3, 13.2) == pytest.approx(fine, rel=1e-4)


def test_noise_streams_are_reproducible_and_distinct():
    a, b, c = Noise(1, "sl-1"), Noise(1, "sl-1"), Noise(1, "sl-2")
    first = [a.random() for _ in range(5)]
    assert first == [b.random() for _ in range(5)]
    assert first != [c.random() for _ in range(5)]
    draws = [a.random() for _ in range(10_000)]
    assert 0 <= min(draws) and max(draws) < 1 and 0.48 < sum(draws) / len(draws) < 0.52
    assert 0.9 < sum(a.gauss(0, 1) ** 2 for _ in range(10_000)) / 10_000 < 1.1


def test_fault_plans():
    plan = FaultPlan.parse(["silent=0.1", "lamp-failure=0.5", "malformed=0.01"])
    assert plan.forced == {"silent": 0.1, "lamp_failure": 0.5, "malformed": 0.01}
    assert plan.malformed_chance() == 0.01 and plan.daily_rate("silent") == 0
    assert FaultPlan.parse([], random=True).daily_rate("silent") > 0
    assert FaultPlan.parse(["fire=0"]).daily_rate("fire") == 0 and FaultPlan().daily_rate("fire") > 0
    for bad in (["meteor=0.1"], ["silent=2"], ["silent=lots"]):
        with pytest.raises(ValueError):
            FaultPlan.parse(bad)
    endpoints = {"streetlight": [f"sl-{n}" for n in range(10)], "waste_bin": ["wb-1"]}
    chosen = plan.forced_on(endpoints, seed=4)
    assert len(chosen["silent"]) == 1 and len(chosen["lamp_failure"]) == 5
    assert chosen["lamp_failure"] <= set(endpoints["streetlight"])
    assert chosen == plan.forced_on(endpoints, seed=4) != plan.forced_on(endpoints, seed=5)


def test_planned_devices_are_reproducible_and_follow_street_activity():
    specs = inventory.plan("seoul", "waste_bin", range(1, 2001), seed=9)
    assert specs == inventory.plan("seoul", "waste_bin", range(1, 2001), seed=9)
    assert specs[0].endpoint == "seoul-sim-wb-00001" and specs[0].serial == "WB00000001"
    districts = [s.district for s in specs]
    assert districts.count("Jung-gu") > 1.8 * districts.count("Dobong-gu")
    assert {s.attributes["waste_kind"] for s in specs} == set(inventory.WASTE_KINDS)
    header = inventory.import_csv(specs[:1]).splitlines()[0].split(",")
    assert header == list(inventory.IMPORT_COLUMNS)


def world(start: datetime, seed: int = 1) -> World:
    clock = SimClock(60, start.timestamp(), "Asia/Seoul")
    return World(Environment(clock), Scheduler(), Stats(), FaultPlan(), seed,
                 {"streetlight": 900, "waste_bin": 900, "wifi_ap": 900})


def spec(kind: str, district: str = "Jung-gu", **attributes) -> DeviceSpec:
    return DeviceSpec(kind, f"test-{kind}", 37.56, 126.99, district, attributes=attributes)


def test_streetlight_follows_the_dark_and_integrates_energy():
    evening = datetime(2026, 11, 24, 20, 0, tzinfo=SEOUL).timestamp()
    light = Streetlight(spec("streetlight", nominal_wattage=120), world(datetime.fromtimestamp(evening, SEOUL)),
                        DeviceFaults())
    assert light.scheduled_level(evening) == 100
    assert light.scheduled_level(evening + 5 * HOUR_S) == 50  # 01:00, night dimming
    assert light.scheduled_level(evening + 16 * HOUR_S) == 0  # noon
    energy, hours = light.supply_energy_wh, light.operating_h
    light.evolve(evening, evening + 4 * HOUR_S)  # 20:00 to midnight at full power
    assert light.supply_energy_wh - energy == pytest.approx(480)
    assert light.operating_h - hours == pytest.approx(4)
    light.evolve(evening + 4 * HOUR_S, evening + 6 * HOUR_S)  # midnight to 02:00 at half
    assert light.supply_energy_wh - energy == pytest.approx(480 + 120)


class _Link:
    state = "registered"

    def report_soon(self) -> None:
        pass


def test_after_a_write_a_light_reports_its_level_and_power_and_the_rest_later():
    evening = datetime(2026, 11, 24, 20, 0, tzinfo=SEOUL)
    light = Streetlight(spec("streetlight", nominal_wattage=120), world(evening), DeviceFaults())
    light.link = _Link()
    light.report(full=True)
    light.write_command(30)
    light.on_written([ResourcePath.parse("/3416/0/1")])
    after_write = {str(reading.path) for reading in senml_readings(light.report(full=False))}
    assert after_write <= {"/3416/0/2", "/3416/0/3", "/3416/0/46", "/3418/0/2", "/3418/0/4"}
    assert {"/3416/0/2", "/3416/0/3", "/3418/0/4"} <= after_write
    # The values that drifted meanwhile (voltage, energy...) go in the next regular Send.
    later = {str(reading.path) for reading in senml_readings(light.report(full=False))}
    assert later and not later & {"/3416/0/2", "/3416/0/3"}


def senml_readings(payload: bytes | None) -> list[Reading]:
    return senml.decode_cbor(payload) if payload else []


def test_waste_fills_faster_for_organic_in_busy_districts_by_day():
    start = datetime(2026, 11, 24, 0, 0, tzinfo=SEOUL)
    t0 = start.timestamp()

    def litres(kind: str, district: str, from_h: float, to_h: float) -> float:
        bin_ = WasteBin(spec("waste_bin", district, waste_kind=kind, capacity_litres=10_000), world(start),
                        DeviceFaults())
        bin_.noise = Noise(0, "same for all")  # the same draws, so only the model differs
        before = bin_.fill_l
        bin_.evolve(t0 + from_h * HOUR_S, t0 + to_h * HOUR_S)
        return bin_.fill_l - before

    assert litres("organic", "Jung-gu", 10, 16) > litres("glass", "Jung-gu", 10, 16) * 2
    assert litres("organic", "Jung-gu", 10, 16) > litres("organic", "Dobong-gu", 10, 16)
    assert litres("organic", "Jung-gu", 10, 16) > 4 * litres("organic", "Jung-gu", 1, 7)


def test_access_point_traffic_peaks_in_the_evening():
    start = datetime(2026, 11, 24, 0, 0, tzinfo=SEOUL)
    t0 = start.timestamp()
    ap = AccessPoint(spec("wifi_ap", band="dual"), world(start), DeviceFaults())
    sent = [r.bytes_sent for r in ap.radios]
    ap.evolve(t0 + 3 * HOUR_S, t0 + 4 * HOUR_S)
    night = sum(r.bytes_sent for r in ap.radios) - sum(sent)
    sent = [r.bytes_sent for r in ap.radios]
    ap.evolve(t0 + 18 * HOUR_S, t0 + 19 * HOUR_S)
    evening = sum(r.bytes_sent for r in ap.radios) - sum(sent)
    assert evening > 5 * night
    assert ap.radios[1].bytes_sent > ap.radios[0].bytes_sent  # more clients on 5 GHz


def test_object_tree_refuses_what_the_device_cannot_do():
    light = Streetlight(spec("streetlight"), world(datetime(2026, 11, 24, 12, 0, tzinfo=SEOUL)), DeviceFaults())
    tree = light.tree
    links = linkformat.parse(tree.registration_links)
    assert links[0].attrs["rt"] == "oma.lwm2m"
    assert linkformat.object_instances(links) == {1: [0], 3: [0], 4: [0], 5: [0], 3416: [0], 3418: [0]}
    assert linkformat.object_versions(links) == {3416: "2.0", 3418: "2.0"}
    with pytest.raises(MethodNotAllowed):
        tree.write(light, ResourcePath(3416, 0), [Reading(ResourcePath(3416, 0, 3), None, 5)])
    with pytest.raises(BadRequest):
        tree.write(light, ResourcePath(3416, 0, 1), [Reading(ResourcePath(3416, 0, 1), None, 101)])
    with pytest.raises(NotFound):
        tree.readings(light, ResourcePath(3416, 0, 64))
    with pytest.raises(MethodNotAllowed):
        tree.execute(light, ResourcePath(3416, 0, 3), b"")
    # Nothing was applied by the refused writes.
    assert light.command is None
