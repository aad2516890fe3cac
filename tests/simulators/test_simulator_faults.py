"""Every fault kind shows in what the device reports on the standard resources (the values the
alarm rules read), and a repair on site (Execute /3/0/12) takes it away (no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from fleet.alarms.models import KINDS, AlarmType
from fleet.objectmodel import ResourcePath
from protocols.lwm2m import senml
from simulators.clock import HOUR_S, SimClock
from simulators.devices import AccessPoint, SimulatedDevice, Streetlight, WasteBin, World
from simulators.devices.streetlight import STUCK_LEVEL
from simulators.environment import Environment
from simulators.faults import ELIGIBLE, RANDOM_DAILY_RATES, STATE_FAULTS, WORLD_DAILY_RATES, DeviceFaults, FaultPlan
from simulators.inventory import DeviceSpec
from simulators.scheduler import Scheduler
from simulators.stats import Stats

SEOUL = ZoneInfo("Asia/Seoul")
EVENING = datetime(2026, 11, 24, 20, 0, tzinfo=SEOUL)  # dark: sunset is 17:16
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=SEOUL)
REPAIR = ResourcePath(3, 0, 12)

# The alarm each fault kind should raise (docs/simulators.md's table says the same).
RAISES = {
    "silent": AlarmType.DEVICE_OFFLINE, "lamp_failure": AlarmType.LAMP_FAILURE,
    "day_burner": AlarmType.DAY_BURNER, "dark_at_night": AlarmType.DARK_AT_NIGHT,
    "level_not_following": AlarmType.LEVEL_NOT_FOLLOWING, "power_anomaly": AlarmType.POWER_ANOMALY,
    "energy_meter_backwards": AlarmType.ENERGY_METER_BACKWARDS, "overflow": AlarmType.BIN_OVERFLOW,
    "fire": AlarmType.BIN_FIRE, "knockover": AlarmType.BIN_KNOCKED_OVER,
    "fill_sensor_stuck": AlarmType.FILL_SENSOR_STUCK, "low_battery": AlarmType.LOW_BATTERY,
    "ap_down": AlarmType.AP_DOWN, "ap_overloaded": AlarmType.AP_OVERLOADED,
    "throughput_collapse": AlarmType.AP_THROUGHPUT_COLLAPSE, "clock_skew": AlarmType.CLOCK_SKEW,
}


class _Link:
    state = "registered"
    silent = False

    def __init__(self) -> None:
        self.reports_due = 0

    def report_soon(self) -> None:
        self.reports_due += 1


def device(cls: type[SimulatedDevice], start: datetime, **attributes) -> SimulatedDevice:
    clock = SimClock(60, start.timestamp(), "Asia/Seoul")
    world = World(Environment(clock), Scheduler(), Stats(), FaultPlan(), 3,
                  {"streetlight": 900, "waste_bin": 900, "wifi_ap": 900})
    spec = DeviceSpec(cls.kind, f"test-{cls.kind}", 37.56, 126.99, "Jung-gu", attributes=attributes)
    simulated = cls(spec, world, DeviceFaults())
    simulated.link = _Link()
    return simulated


def send(simulated: SimulatedDevice, *, full: bool = True) -> dict[str, object]:
    payload = simulated.report(full=full)
    return {str(r.path): r.value for r in senml.decode_cbor(payload)} if payload else {}


def struck(simulated: SimulatedDevice, fault: str) -> dict[str, object]:
    """What the device sends at once after the fault strikes (it reports a fault right away)."""
    before = simulated.link.reports_due
    simulated.strike(fault)
    assert simulated.link.reports_due > before or fault == "fill_sensor_stuck"
    return send(simulated, full=True)


def repaired(simulated: SimulatedDevice) -> dict[str, object]:
    simulated.tree.execute(simulated, REPAIR, b"")
    return send(simulated, full=True)


def test_every_alarm_condition_has_a_fault_kind_for_the_right_devices():
    assert set(RAISES) == set(STATE_FAULTS)
    # A failed firmware update is the rollout's to raise, from what the fw_* faults make devices do.
    assert set(RAISES.values()) == set(AlarmType) - {AlarmType.CITIZEN_REPORT, AlarmType.FIRMWARE_UPDATE_FAILED}
    for fault, alarm in RAISES.items():
        assert set(ELIGIBLE[fault]) <= set(KINDS[alarm]), fault
        # --faults strikes each of them now and then.
        assert fault in RANDOM_DAILY_RATES or fault in WORLD_DAILY_RATES, fault
    plan = FaultPlan.parse([f"{fault.replace('_', '-')}=0.1" for fault in RAISES])
    assert set(plan.forced) == set(RAISES)


def test_lamp_failure_and_day_burner():
    light = device(Streetlight, EVENING, nominal_wattage=120)
    assert send(light)["/3416/0/5"] is False
    state = struck(light, "lamp_failure")
    assert state["/3416/0/5"] is True and state["/3416/0/46"] == 0.0 and state["/3418/0/4"] < 2
    assert repaired(light)["/3416/0/5"] is False

    light = device(Streetlight, NOON, nominal_wattage=120)
    assert send(light)["/3416/0/3"] == 0
    state = struck(light, "day_burner")
    assert state["/3416/0/3"] == 100 and state["/3416/0/10"] is True
    assert state["/3416/0/2"] == 0 and state["/3418/0/4"] > 100
    assert repaired(light)["/3416/0/3"] == 0


def test_dark_at_night_is_no_light_and_no_power_while_the_schedule_says_lit():
    light = device(Streetlight, EVENING, nominal_wattage=90)
    assert send(light)["/3416/0/3"] == 100
    state = struck(light, "dark_at_night")
    assert state["/3416/0/2"] == 100  # what it should do
    assert state["/3416/0/3"] == 0 and state["/3416/0/46"] == 0.0 and state["/3418/0/4"] < 2
    assert state["/3416/0/5"] is False  # the controller does not see it: only Fleet can
    assert repaired(light)["/3416/0/3"] == 100


def test_level_not_following_ignores_writes():
    light = device(Streetlight, EVENING, nominal_wattage=100)
    send(light)
    state = struck(light, "level_not_following")
    assert state["/3416/0/2"] == 100 and state["/3416/0/3"] == STUCK_LEVEL
    light.write_command(60)
    state = send(light)
    assert state["/3416/0/2"] == 60 and state["/3416/0/3"] == STUCK_LEVEL
    # The power it draws matches the level it is stuck at: only the level is wrong.
    assert state["/3418/0/4"] == pytest.approx(STUCK_LEVEL, rel=0.04)
    assert repaired(light)["/3416/0/3"] == 60


def test_power_anomaly_draws_far_less_than_nominal_times_level():
    light = device(Streetlight, EVENING, nominal_wattage=120)
    assert send(light)["/3418/0/4"] == pytest.approx(120, rel=0.04)
    state = struck(light, "power_anomaly")
    assert state["/3416/0/3"] == 100
    assert state["/3418/0/4"] < 0.65 * 120 and state["/3416/0/46"] < 0.65 * 120
    assert repaired(light)["/3418/0/4"] == pytest.approx(120, rel=0.04)


def test_energy_meter_runs_backwards():
    light = device(Streetlight, EVENING, nominal_wattage=120)
    before = send(light)
    state = struck(light, "energy_meter_backwards")
    assert state["/3418/0/6"] < before["/3418/0/6"] and state["/3416/0/47"] < before["/3416/0/47"]
    t = light.sim_t
    light.evolve(t, t + HOUR_S)  # an hour lit: 120 Wh fewer, not more
    light.sim_t = t + HOUR_S
    later = send(light)
    assert later["/3418/0/6"] == pytest.approx(state["/3418/0/6"] - 120, abs=6)
    assert later["/3416/0/47"] < state["/3416/0/47"]
    repaired(light)
    light.evolve(light.sim_t, light.sim_t + HOUR_S)
    assert light.supply_energy_wh > later["/3418/0/6"]


def test_bin_faults():
    bin_ = device(WasteBin, NOON, capacity_litres=240)
    send(bin_)
    assert struck(bin_, "overflow")["/3435/0/2"] > 100
    assert repaired(bin_)["/3435/0/2"] < 5

    bin_ = device(WasteBin, NOON)
    send(bin_)
    state = struck(bin_, "knockover")
    assert state["/3429/0/1"] > 1.3 and state["/3429/0/6"] is True

    bin_ = device(WasteBin, NOON)
    send(bin_)
    state = struck(bin_, "fire")
    bin_.sim_t += 900  # a quarter of an hour into the fire
    assert send(bin_)["/3303/0/5700"] > state["/3303/0/5700"] + 50

    bin_ = device(WasteBin, NOON)
    assert send(bin_)["/3/0/9"] > 50
    state = struck(bin_, "low_battery")
    assert state["/3/0/9"] < 15
    assert bin_.tree.value(bin_, ResourcePath(3, 0, 20)) == 4  # Battery Status: low
    assert repaired(bin_)["/3/0/9"] >= 99  # a new battery


def test_a_stuck_fill_sensor_repeats_its_reading_while_the_bin_fills():
    bin_ = device(WasteBin, NOON, capacity_litres=240, waste_kind="organic")
    frozen = struck(bin_, "fill_sensor_stuck")["/3435/0/2"]
    t = bin_.sim_t
    for day in range(1, 4):
        bin_.evolve(t + (day - 1) * 24 * HOUR_S, t + day * 24 * HOUR_S)
        bin_.sim_t = t + day * 24 * HOUR_S
        # Every Send carries the same reading, though nothing about it changed.
        assert send(bin_, full=False)["/3435/0/2"] == frozen
    assert bin_.fill_percentage() != frozen
    # Measuring again, within the sensor's noise.
    assert repaired(bin_)["/3435/0/2"] == pytest.approx(bin_.fill_percentage(), abs=3)


def test_access_point_faults():
    ap = device(AccessPoint, NOON, band="dual")
    send(ap)
    state = struck(ap, "ap_down")
    assert state["/12/0/3"] == state["/12/1/3"] == 2 and state["/4/0/6"] == 0
    counters = state["/12/1/33"]
    ap.evolve(ap.sim_t, ap.sim_t + HOUR_S)
    assert ap.radios[1].bytes_sent == counters
    assert repaired(ap)["/12/0/3"] == 1

    def hourly_bytes(ap: AccessPoint, hour: float) -> int:
        before = sum(r.bytes_sent for r in ap.radios)
        t0 = EVENING.replace(hour=0).timestamp()
        ap.evolve(t0 + hour * HOUR_S, t0 + (hour + 1) * HOUR_S)
        return sum(r.bytes_sent for r in ap.radios) - before

    normal = device(AccessPoint, NOON, band="dual")
    overloaded = device(AccessPoint, NOON, band="dual")
    struck(overloaded, "ap_overloaded")
    # At 03:00 the street is empty, but the overloaded AP carries 300+ clients' traffic.
    assert hourly_bytes(overloaded, 3) > 20 * hourly_bytes(normal, 3)
    assert overloaded.utilisation >= 70

    collapsed = device(AccessPoint, NOON, band="dual")
    struck(collapsed, "throughput_collapse")
    assert hourly_bytes(collapsed, 18) < 0.1 * hourly_bytes(normal, 18)
    assert collapsed.tree.value(collapsed, ResourcePath(12, 0, 3)) == 1  # up, yet nothing gets through


@pytest.mark.parametrize("cls", [Streetlight, WasteBin, AccessPoint])
def test_a_skewed_clock_is_in_every_send_until_the_server_sets_it(cls):
    simulated = device(cls, NOON)
    assert "/3/0/13" not in send(simulated)
    now = datetime.now(UTC)
    state = struck(simulated, "clock_skew")
    assert abs(datetime.fromtimestamp(state["/3/0/13"], UTC) - now) > timedelta(hours=1.9)
    simulated.strike("clock_skew")  # struck again: still one reading of its clock
    assert [r.path for r in senml.decode_cbor(simulated.report(full=False))].count(ResourcePath(3, 0, 13)) == 1
    # LwM2M lets a server write Current Time; the device's clock is right from then on.
    simulated.set_time(datetime.now(UTC))
    assert abs(simulated.current_time() - datetime.now(UTC)) < timedelta(minutes=1)
    assert "/3/0/13" not in send(simulated, full=False)
