"""Which conditions apply to which kind of device, and which reported paths wake them."""

from __future__ import annotations

from datetime import datetime

import structlog

from fleet.alarms.models import Finding
from fleet.alarms.rules import access_point, device, streetlight, waste_bin
from fleet.alarms.rules.models import DeviceContext, Observed, Rule

log = structlog.get_logger(__name__)

RULES_BY_KIND: dict[str, tuple[Rule, ...]] = {
    "streetlight": streetlight.RULES + device.RULES,
    "waste_bin": waste_bin.RULES + device.RULES,
    "wifi_ap": access_point.RULES + device.RULES,
}

# Every path some rule reads: any other committed point costs one set lookup.
WATCHED: frozenset[str] = frozenset(p for rules in RULES_BY_KIND.values() for r in rules for p in r.reads)
# Paths whose value before the latest one a rule compares with (counters, rates of rise).
KEEP_PREVIOUS: frozenset[str] = (streetlight.ENERGY_PATHS | {waste_bin.TEMPERATURE}
                                 | frozenset(access_point.SENT_PATHS + access_point.RECEIVED_PATHS))


def judge(ctx: DeviceContext, seen: Observed, changed: set[str], now: datetime) -> list[Finding]:
    """The findings of every rule of the device's kind that reads one of the changed paths."""
    findings = []
    for rule in RULES_BY_KIND.get(ctx.kind, ()):
        if rule.reads.isdisjoint(changed):
            continue
        try:
            found = rule.condition(ctx, seen, now)
        except Exception:  # noqa: BLE001 - our bug; the device's other rules and devices go on
            log.exception("alarm rule failed", type=rule.type, device_id=str(ctx.device_id))
            continue
        if found is not None:
            findings.append(found)
    return findings
