"""Access point conditions: a radio down, a saturated backhaul, throughput collapsed."""

from __future__ import annotations

import statistics
from collections import deque
from datetime import datetime

from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.rules.models import DeviceContext, Observed, Rule, finding

RADIOS = range(4)  # WLAN connectivity (12) instances: one per radio
STATUS = "/12/{}/3"          # Status: 0 disabled, 1 up, 2 error
BYTES_SENT = "/12/{}/33"     # Total Bytes Sent
BYTES_RECEIVED = "/12/{}/34"  # Total Bytes Received
LINK_UTILISATION = "/4/0/6"  # Connectivity Monitoring: Link Utilization, % (the backhaul)
STATUS_UP, STATUS_DISABLED = 1, 0

# The rolling median of a radio's last RATE_WINDOW throughput samples; judged only once
# RATE_WARM_UP samples exist, and only above a floor (an idle radio at night is not collapsed).
RATE_WINDOW, RATE_WARM_UP = 15, 5
RATE_FLOOR_BYTES_S = 1000.0

STATUS_PATHS = tuple(STATUS.format(i) for i in RADIOS)
SENT_PATHS = tuple(BYTES_SENT.format(i) for i in RADIOS)
RECEIVED_PATHS = tuple(BYTES_RECEIVED.format(i) for i in RADIOS)


def ap_down(ctx: DeviceContext, seen: Observed, now: datetime) -> Finding | None:
    """A radio enabled but not up (Status 2, error). A radio the city disabled is not down;
    an AP that stopped reporting is the offline rule's."""
    statuses = {i: seen.number(path) for i, path in zip(RADIOS, STATUS_PATHS)}
    known = {i: s for i, s in statuses.items() if s is not None}
    if not known:
        return None
    down = sorted(i for i, s in known.items() if s not in (STATUS_UP, STATUS_DISABLED))
    return finding(ctx, AlarmType.AP_DOWN, bool(down), now, len(down),
                   f"radio {', '.join(map(str, down))} not up" if down else "")


def overloaded(ctx: DeviceContext, seen: Observed, now: datetime) -> Finding | None:
    """Object 12 has no client count, so the crowd shows as a saturated backhaul (/4/0/6)."""
    utilisation = seen.number(LINK_UTILISATION)
    if utilisation is None:
        return None
    present = utilisation >= ctx.settings.overloaded_link_percent
    return finding(ctx, AlarmType.AP_OVERLOADED, present, now, utilisation,
                   f"backhaul {utilisation:g} % used" if present else "")


def _radio_rate(seen: Observed, radio: int) -> tuple[float, datetime] | None:
    """Bytes per second through a radio between its last two reports; None across a counter
    reset (a reboot) or without two reports."""
    total = 0.0
    at = None
    for path in (SENT_PATHS[radio], RECEIVED_PATHS[radio]):
        latest, previous = seen.latest.get(path), seen.previous.get(path)
        if latest is None or previous is None:
            continue
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (latest.value, previous.value)):
            return None  # not a counter: nothing to judge by
        seconds = (latest.time - previous.time).total_seconds()
        if seconds <= 0 or latest.value < previous.value:
            return None
        total += (latest.value - previous.value) / seconds
        at = latest.time
    return None if at is None else (total, at)


def throughput_collapse(ctx: DeviceContext, seen: Observed, now: datetime) -> Finding | None:
    """A radio's throughput below throughput_collapse_percent of its own recent median.

    The medians live on the node that sees the AP's reports; an AP that moves to another
    node starts warming up again there (RATE_WARM_UP reports) before it is judged."""
    share = ctx.settings.throughput_collapse_percent / 100
    collapsed, judged = [], False
    for radio in RADIOS:
        rate = _radio_rate(seen, radio)
        if rate is None:
            continue
        key = SENT_PATHS[radio]
        history = seen.rates.setdefault(key, deque(maxlen=RATE_WINDOW))
        if seen.rated_at.get(key) != rate[1]:  # each report counts once
            median = statistics.median(history) if len(history) >= RATE_WARM_UP else None
            history.append(rate[0])
            seen.rated_at[key] = rate[1]
            if median is None or median < RATE_FLOOR_BYTES_S:
                continue
            judged = True
            if rate[0] < median * share:
                collapsed.append(f"radio {radio} at {rate[0]:.0f} B/s, median {median:.0f} B/s")
    if not judged:
        return None
    return finding(ctx, AlarmType.AP_THROUGHPUT_COLLAPSE, bool(collapsed), now, None, "; ".join(collapsed))


RULES = (
    Rule(AlarmType.AP_DOWN, frozenset(STATUS_PATHS), ap_down),
    Rule(AlarmType.AP_OVERLOADED, frozenset({LINK_UTILISATION}), overloaded),
    Rule(AlarmType.AP_THROUGHPUT_COLLAPSE, frozenset(SENT_PATHS + RECEIVED_PATHS), throughput_collapse),
)
