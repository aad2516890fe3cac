"""Access point down, overloaded, throughput collapsed."""

from __future__ import annotations

from datetime import timedelta

from fleet.alarms.models import AlarmType
from fleet.alarms.rules.access_point import ap_down, overloaded, throughput_collapse
from fleet.alarms.rules.models import Observed, Value
from tests.fleet.alarms.conftest import NOON_KST, context, observed


def test_down_when_an_enabled_radio_reports_an_error():
    ctx = context("wifi_ap")
    found = ap_down(ctx, observed(NOON_KST, p12_0_3=1, p12_1_3=2), NOON_KST)
    assert (found.type, found.present, found.detail) == (AlarmType.AP_DOWN, True, "radio 1 not up")
    assert ap_down(ctx, observed(NOON_KST, p12_0_3=1, p12_1_3=0), NOON_KST).present is False
    assert ap_down(ctx, observed(NOON_KST), NOON_KST) is None


def test_overloaded_by_backhaul_utilisation():
    ctx = context("wifi_ap")
    assert overloaded(ctx, observed(NOON_KST, p4_0_6=95), NOON_KST).present is True
    assert overloaded(ctx, observed(NOON_KST, p4_0_6=40), NOON_KST).present is False
    assert overloaded(context("wifi_ap", settings={"overloaded_link_percent": 30}),
                      observed(NOON_KST, p4_0_6=40), NOON_KST).present is True
    assert overloaded(ctx, observed(NOON_KST), NOON_KST) is None


def _report(seen: Observed, at, sent: int, received: int) -> None:
    for path, value in (("/12/0/33", sent), ("/12/0/34", received)):
        if path in seen.latest:
            seen.previous[path] = seen.latest[path]
        seen.latest[path] = Value(at, value)


def test_throughput_collapse_against_its_own_rolling_median():
    ctx = context("wifi_ap")
    seen, sent, received = Observed(), 0, 0
    results = []
    for minute in range(8):
        sent, received = sent + 600_000, received + 120_000  # 12,000 B/s
        _report(seen, NOON_KST + timedelta(minutes=minute), sent, received)
        results.append(throughput_collapse(ctx, seen, NOON_KST))
    # No previous report, then warming up: nothing judged.
    assert results[:6] == [None] * 6
    assert results[6].present is False
    _report(seen, NOON_KST + timedelta(minutes=8), sent + 60_000, received + 12_000)  # 1,200 B/s
    found = throughput_collapse(ctx, seen, NOON_KST)
    assert (found.type, found.present) == (AlarmType.AP_THROUGHPUT_COLLAPSE, True)
    assert "median 12000 B/s" in found.detail
    # The same report judged again (another path of it changed) is not a new sample.
    assert throughput_collapse(ctx, seen, NOON_KST) is None


def test_a_counter_reset_is_not_a_collapse():
    ctx = context("wifi_ap")
    seen = Observed()
    for minute in range(8):
        _report(seen, NOON_KST + timedelta(minutes=minute), (minute + 1) * 600_000, 0)
        throughput_collapse(ctx, seen, NOON_KST)
    _report(seen, NOON_KST + timedelta(minutes=9), 100, 0)  # rebooted
    assert throughput_collapse(ctx, seen, NOON_KST) is None


def test_a_rule_that_fails_does_not_stop_the_others(monkeypatch):
    from fleet.alarms.rules import kinds

    def broken(ctx, seen, now):
        raise RuntimeError("a bug")

    rules = tuple(r if r.type != AlarmType.AP_DOWN else type(r)(r.type, r.reads, broken)
                  for r in kinds.RULES_BY_KIND["wifi_ap"])
    monkeypatch.setitem(kinds.RULES_BY_KIND, "wifi_ap", rules)
    seen = observed(NOON_KST, p12_0_3=2, p3_0_9=5)
    found = kinds.judge(context("wifi_ap"), seen, {"/12/0/3", "/3/0/9"}, NOON_KST)
    assert [f.type for f in found] == [AlarmType.LOW_BATTERY]


def test_counters_that_are_not_numbers_are_not_judged():
    seen = observed(NOON_KST, p12_0_33="lots")
    seen.previous["/12/0/33"] = Value(NOON_KST - timedelta(minutes=1), 10)
    assert throughput_collapse(context("wifi_ap"), seen, NOON_KST) is None
